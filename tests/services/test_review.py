"""Results faster than physics allows are flagged for review, not hidden; organisers decide.

The worker's own store path sets the flag; an organiser clears it (API, page, CLI) or disqualifies
the submission. A flagged result stays ranked, marked on the page, in the API and in the CSV.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import typer
from fastapi.testclient import TestClient
from sqlalchemy import update
from typer.testing import CliRunner

from edc import db
from edc.cli import admin as cli_admin
from edc.config import Settings, get_settings
from edc.models import Submission
from edc.services import accounts
from edc.status import ReviewState, SubmissionStatus
from edc.worker import executor
from edc.worker.evaluation import Evaluation
from tests.support.competition import (
    PASSWORD,
    _hash_of,
    add_submission,
    bearer,
    csrf_from,
    metrics,
    web_login,
)
from tests.support.live_server import LiveServer, People
from tests.support.rows import get_submission

FIGURE = "latency.e2e_per_token_ms.p50"


def implausible(score: float, *, floor_ms: float = 0.5) -> dict[str, Any]:
    """A result whose ranked figure is under the task's floor, as the harness reports it."""
    return {
        **metrics(score),
        "plausibility": {
            "figure": FIGURE,
            "value": score,
            "floor_ms": floor_ms,
            "implausible": score < floor_ms,
        },
    }


def stored(settings: Settings, result: dict[str, Any], **fields: Any) -> int:
    """A row run through the worker's store path, as a completed evaluation leaves it."""
    row = add_submission(settings, fields.pop("user_id", None), status=SubmissionStatus.PROCESSING)
    outcome = executor.completed(
        Evaluation(metrics=result, logs="hidden", public_logs="public", **fields)
    )
    executor._record(settings, row, 1, outcome)
    return row


def test_the_store_path_flags_an_implausible_result_and_keeps_its_audit(
    rules: Settings,
) -> None:
    audit = {"seed": "0x5eed", "request_ids": ["r-1", "r-2"], "prompt_ids": ["p-7"]}
    flagged = stored(rules, implausible(0.01), audit=audit)
    plausible = stored(rules, implausible(3.0))

    row = get_submission(rules, flagged)
    assert row.status is SubmissionStatus.COMPLETED
    assert row.review is ReviewState.FLAGGED
    assert row.audit == audit
    assert row.score == 0.01  # still scored: flagged, not hidden
    other = get_submission(rules, plausible)
    assert (other.review, other.audit) == (None, None)  # no audit given: none stored


def test_a_new_result_is_judged_afresh(rules: Settings) -> None:
    row = stored(rules, implausible(0.01))
    assert get_submission(rules, row).review is ReviewState.FLAGGED
    # The same row evaluated again (a rerun's attempt): the new, plausible result is unflagged.
    with db.session_scope(rules) as session:
        session.execute(
            update(Submission)
            .where(Submission.id == row)
            .values(status=SubmissionStatus.PROCESSING, attempt=2)
        )
    executor._record(rules, row, 2, executor.completed(Evaluation(implausible(4.0), "", "")))
    assert get_submission(rules, row).review is None


def test_admin_clears_a_flag_a_participant_cannot(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    row = stored(rules, implausible(0.01), user_id=people.alice[0])
    url = f"/api/v1/admin/submissions/{row}/clear-review"
    assert app_client.post(url, headers=bearer(people.alice[1])).status_code == 403
    assert get_submission(rules, row).review is ReviewState.FLAGGED

    out = app_client.post(url, headers=bearer(people.root[1]))
    assert out.status_code == 200, out.text
    assert out.json()["review"] == "cleared"
    assert get_submission(rules, row).review is ReviewState.CLEARED
    # Only a flagged result can be cleared.
    again = app_client.post(url, headers=bearer(people.root[1]))
    assert again.status_code == 409 and "not flagged" in again.json()["detail"]
    missing = app_client.post(
        "/api/v1/admin/submissions/999999/clear-review", headers=bearer(people.root[1])
    )
    assert missing.status_code == 404


def test_the_flag_shows_to_the_participant_with_the_floor_and_the_figure(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    row = stored(rules, implausible(0.01, floor_ms=0.5), user_id=people.alice[0])
    api = app_client.get(f"/api/v1/submissions/{row}", headers=bearer(people.alice[1])).json()
    assert api["review"] == "flagged"
    assert "audit" not in api

    web_login(app_client, "alice")
    page = app_client.get(f"/submissions/{row}").text
    notice = page[page.index('id="notices"') :][:800]
    assert "Flagged for review: faster than the task&#39;s physical floor" in notice
    assert FIGURE in notice and "0.01 ms" in notice and "floor 0.5 ms" in notice
    assert "clear-review" not in page  # the organisers' buttons are not hers


def test_a_flagged_result_stays_ranked_marked_until_disqualified(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    flagged = stored(rules, implausible(0.01), user_id=people.alice[0])
    stored(rules, implausible(2.0), user_id=people.bob[0])

    api = app_client.get("/api/v1/leaderboard").json()
    assert [(e["participant"], e["flagged"]) for e in api["entries"]] == [
        ("alice", True),
        ("bob", False),
    ]
    page = app_client.get("/leaderboard").text
    alice_row = page[page.index(f'id="entry-{flagged}"') :].split("</tr>")[0]
    assert "flagged for review" in alice_row
    bob_row = page[page.index('data-participant="bob"') :].split("</tr>")[0]
    assert "flagged for review" not in bob_row
    exported = app_client.get("/api/v1/admin/leaderboard.csv", headers=bearer(people.root[1]))
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["participant"], r["flagged_for_review"]) for r in rows] == [
        ("alice", "yes"),
        ("bob", ""),
    ]

    root = bearer(people.root[1])
    app_client.post(
        f"/api/v1/admin/submissions/{flagged}/disqualify", json={"reason": "too fast"}, headers=root
    )
    after = app_client.get("/api/v1/leaderboard").json()
    assert [e["participant"] for e in after["entries"]] == ["bob"]


def test_a_cleared_result_is_ranked_unmarked(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    row = stored(rules, implausible(0.01), user_id=people.alice[0])
    app_client.post(f"/api/v1/admin/submissions/{row}/clear-review", headers=bearer(people.root[1]))
    entry = app_client.get("/api/v1/leaderboard").json()["entries"][0]
    assert (entry["submission_id"], entry["flagged"]) == (row, False)


def test_the_admin_page_marks_the_flag_and_clears_it_with_a_csrf_form(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    with db.session_scope(rules) as session:
        root = accounts.user_by_name(session, "root")
        assert root is not None
        root.password_hash = _hash_of(PASSWORD)
    row = stored(rules, implausible(0.01), user_id=people.alice[0])
    web_login(app_client, "root")
    listing = app_client.get("/admin").text
    line = listing[listing.index(f'id="admin-submission-{row}"') :].split("</tr>")[0]
    assert 'data-review="flagged"' in line and "Clear review" in line

    action = f"/admin/submissions/{row}/clear-review"
    forged = app_client.post(action, data={"csrf_token": "nope"}, follow_redirects=False)
    assert forged.status_code == 403
    assert get_submission(rules, row).review is ReviewState.FLAGGED

    page = app_client.get(f"/submissions/{row}").text
    assert action in page  # the button on the submission's own admin card
    done = app_client.post(
        action,
        data={"csrf_token": csrf_from(page), "next": f"/submissions/{row}"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == f"/submissions/{row}"
    assert get_submission(rules, row).review is ReviewState.CLEARED
    listing = app_client.get("/admin").text
    line = listing[listing.index(f'id="admin-submission-{row}"') :].split("</tr>")[0]
    assert 'data-review="cleared"' in line and "Clear review" not in line


def test_edc_admin_clear_review(live_server: LiveServer, people: People, tmp_path: Path) -> None:
    settings = live_server.settings
    row = stored(settings, implausible(0.01), user_id=people.alice[0])
    app = typer.Typer()
    cli_admin.register(app)
    env = {
        "EDC_CLI_CONFIG_DIR": str(tmp_path / "cli"),
        "EDC_SERVER": live_server.url,
    }

    def run(token: str) -> Any:
        get_settings.cache_clear()  # the settings come from the environment of each run
        try:
            return CliRunner().invoke(
                app, ["admin", "clear-review", str(row)], env={**env, "EDC_TOKEN": token}
            )
        finally:
            get_settings.cache_clear()

    refused = run(people.alice[1])
    done = run(people.root[1])
    again = run(people.root[1])
    assert done.exit_code == 0, done.output
    assert "review: cleared" in done.output
    assert get_submission(settings, row).review is ReviewState.CLEARED
    assert again.exit_code == 1 and "not flagged" in again.output
    assert refused.exit_code == 1 and "(admins) only" in refused.output

"""The audit record (the hidden evaluation's secret seed, request and prompt ids) is for organisers.

A result goes through the worker's store path with an audit record; then every page, API answer,
event stream and export its owner (or anyone) can reach is read, and the log of it all: none holds
any part of the record. The organisers' views of the submission do.
"""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from edc import db
from edc.config import Settings
from edc.services import accounts
from edc.status import SubmissionStatus
from edc.worker import executor
from edc.worker.evaluation import Evaluation
from tests.support.competition import PASSWORD, _hash_of, add_submission, bearer, metrics, web_login
from tests.support.live_server import People

SEED = "seed-7f3a9c1e0b5d"
REQUEST_ID = "req-91c2d4"
PROMPT_ID = "hidden-prompt-0042"
AUDIT = {"seed": SEED, "request_ids": [REQUEST_ID], "prompt_ids": [PROMPT_ID]}
SECRETS = (SEED, REQUEST_ID, PROMPT_ID)


def _clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_the_audit_record_reaches_organisers_only(
    app_client: TestClient, rules: Settings, people: People, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    row = add_submission(rules, people.alice[0], status=SubmissionStatus.PROCESSING)
    result = {
        **metrics(2.0),
        "plausibility": {"figure": "x", "value": 0.1, "floor_ms": 0.2, "implausible": True},
    }
    evaluation = Evaluation(metrics=result, logs="hidden run", public_logs="public", audit=AUDIT)
    executor._record(rules, row, 1, executor.completed(evaluation))

    alice = bearer(people.alice[1])
    seen = [
        app_client.get(f"/api/v1/submissions/{row}", headers=alice).text,
        app_client.get("/api/v1/submissions", headers=alice).text,
        app_client.get(f"/api/v1/submissions/{row}/logs", headers=alice).text,
        app_client.get(f"/api/v1/submissions/{row}/events", headers=alice).text,
        app_client.get("/api/v1/leaderboard").text,
        app_client.get("/api/v1/leaderboard/history").text,
        app_client.get("/leaderboard").text,
    ]
    events = seen[3]
    assert f'"id":{row}' in events and "event: end" in events  # the stream ran to its end
    web_login(app_client, "alice")
    seen += [app_client.get("/").text, app_client.get(f"/submissions/{row}").text]
    assert "flagged for review" in seen[-1].lower()
    for text in seen:
        _clean(text)

    # Organisers: the exports hold no audit either; the views of the submission do.
    root = bearer(people.root[1])
    _clean(app_client.get("/api/v1/admin/leaderboard.csv", headers=root).text)
    _clean(app_client.get("/api/v1/admin/submissions.csv", headers=root).text)
    _clean(app_client.get("/api/v1/admin/queue", headers=root).text)
    admin_api = app_client.get(f"/api/v1/admin/submissions/{row}", headers=root).json()
    assert admin_api["audit"] == AUDIT and admin_api["review"] == "flagged"
    cleared = app_client.post(f"/api/v1/admin/submissions/{row}/clear-review", headers=root)
    assert cleared.json()["audit"] == AUDIT
    # An admin reading the participant's API gets the participant's shape.
    assert "audit" not in app_client.get(f"/api/v1/submissions/{row}", headers=root).json()

    with db.session_scope(rules) as session:
        user = accounts.user_by_name(session, "root")
        assert user is not None
        user.password_hash = _hash_of(PASSWORD)
    app_client.cookies.clear()
    web_login(app_client, "root")
    admin_page = app_client.get(f"/submissions/{row}").text
    shown = admin_page[admin_page.index('id="audit"') :].split("</pre>")[0]
    for secret in SECRETS:
        assert secret in shown
    # ... but not in the page's data for its live script, which is the participant's shape.
    data = admin_page[admin_page.index('id="submission-data"') :].split("</script>")[0]
    _clean(data)
    _clean(app_client.get("/admin").text)

    _clean(caplog.text)
    assert json.dumps(AUDIT) not in caplog.text


def test_a_rerun_drops_the_old_review_and_audit(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    row = add_submission(rules, people.alice[0], status=SubmissionStatus.PROCESSING)
    result = {**metrics(2.0), "plausibility": {"implausible": True}}
    executor._record(rules, row, 1, executor.completed(Evaluation(result, "", "", audit=AUDIT)))
    out = app_client.post(
        f"/api/v1/admin/submissions/{row}/rerun", headers=bearer(people.root[1])
    ).json()
    assert (out["status"], out["review"], out["audit"]) == ("queued", None, None)

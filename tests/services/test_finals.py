"""Final rankings without a sandbox: who may start one, its plan and job, the final board.

The measurements here are written by the worker's own storing code with fabricated outcomes;
tests/worker/test_final_run.py runs real re-measurements in the real sandbox.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from rq import Queue
from sqlalchemy import func, select
from typer.testing import CliRunner

from edc import db
from edc.cli import admin as cli_admin
from edc.config import Settings, get_settings
from edc.errors import Conflict
from edc.models import Final, Measurement, Submission, utcnow
from edc.scheduler import connection, final_queue, producer
from edc.scheduler.position import NO_OWNER
from edc.services import accounts, finals, rules
from edc.status import FailureReason, FinalStatus, SubmissionStatus
from edc.worker import final_run
from edc.worker.executor import Outcome
from tests.services.conftest import LiveServer, People
from tests.support.competition import (
    PASSWORD,
    _hash_of,
    add_submission,
    bearer,
    csrf_from,
    make_user,
    metrics,
    web_login,
)


def _home_queue(settings: Settings) -> Queue:
    return Queue(
        producer.queue_name_for(settings, "cpu", NO_OWNER),
        connection=connection.redis_connection(settings),
    )


def _finals(settings: Settings) -> list[Final]:
    with db.session_scope(settings) as session:
        return list(session.scalars(select(Final).order_by(Final.id)))


def _plan(settings: Settings, final_id: int) -> list[tuple[int, int, int]]:
    with db.session_scope(settings) as session:
        rows = session.execute(
            select(Measurement.round, Measurement.position, Measurement.submission_id)
            .where(Measurement.final_id == final_id)
            .order_by(Measurement.round, Measurement.position)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_finalize_refuses_without_a_ranked_entry(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    add_submission(rules, people.alice[0], result_metrics=metrics(1.0, correct=False))
    add_submission(rules, people.bob[0], status=SubmissionStatus.QUEUED)
    response = app_client.post(
        "/api/v1/admin/finals", json={"top_k": 3, "rounds": 2}, headers=bearer(people.root[1])
    )
    assert response.status_code == 409
    assert "no ranked entry" in response.json()["detail"]
    with pytest.raises(Conflict):
        finals.finalize(rules, top_k=3, rounds=2)
    assert _finals(rules) == []
    assert _home_queue(rules).get_job_ids() == []


def test_a_participant_cannot_finalize(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    add_submission(rules, people.alice[0], result_metrics=metrics(2.0))
    refused = app_client.post(
        "/api/v1/admin/finals", json={"top_k": 1, "rounds": 1}, headers=bearer(people.alice[1])
    )
    assert refused.status_code == 403
    assert (
        app_client.get("/api/v1/admin/finals", headers=bearer(people.alice[1])).status_code == 403
    )
    web_login(app_client, "alice")
    token = csrf_from(app_client.get("/account").text)
    page = app_client.post(
        "/admin/finals",
        data={"csrf_token": token, "top_k": "1", "rounds": "1"},
        headers={"accept": "application/json"},
        follow_redirects=False,
    )
    assert page.status_code == 403
    assert _finals(rules) == []


@pytest.mark.parametrize(("top_k", "rounds"), [(0, 1), (1, 0), (101, 1), (1, 21)])
def test_out_of_range_numbers_are_refused(
    app_client: TestClient, rules: Settings, people: People, top_k: int, rounds: int
) -> None:
    add_submission(rules, people.alice[0], result_metrics=metrics(2.0))
    response = app_client.post(
        "/api/v1/admin/finals",
        json={"top_k": top_k, "rounds": rounds},
        headers=bearer(people.root[1]),
    )
    assert response.status_code == 422
    assert _finals(rules) == []


def _three_entries(rules: Settings, people: People) -> tuple[int, int, int]:
    t0 = utcnow() - timedelta(hours=2)
    carol = make_user(rules, "carol", password=None)[0]
    a = add_submission(rules, people.alice[0], result_metrics=metrics(1.0), created_at=t0)
    b = add_submission(
        rules, people.bob[0], result_metrics=metrics(2.0), created_at=t0 + timedelta(minutes=1)
    )
    c = add_submission(
        rules, carol, result_metrics=metrics(3.0), created_at=t0 + timedelta(minutes=2)
    )
    return a, b, c


def test_finalize_plans_round_robin_and_queues_one_job_on_the_home_queue(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    a, b, _ = _three_entries(rules, people)
    response = app_client.post(
        "/api/v1/admin/finals", json={"top_k": 2, "rounds": 3}, headers=bearer(people.root[1])
    )
    assert response.status_code == 201, response.text
    out = response.json()
    assert (out["status"], out["top_k"], out["rounds"], out["hardware_class"]) == (
        "queued",
        2,
        3,
        "cpu",
    )
    assert (out["done"], out["planned"], out["requested_by"]) == (0, 6, "root")
    final_id = out["id"]
    # Round 1 of every entry, then round 2, ...: the order one worker takes them in.
    assert _plan(rules, final_id) == [(r, p, s) for r in (1, 2, 3) for p, s in ((1, a), (2, b))]
    assert _home_queue(rules).get_job_ids() == [final_queue.job_id_for(final_id)]
    job = _home_queue(rules).fetch_job(final_queue.job_id_for(final_id))
    assert job is not None and job.func_name == final_queue.JOB_FUNCTION
    assert job.args == (final_id,)
    (final,) = _finals(rules)
    assert [e["submission_id"] for e in final.entries] == [a, b]
    assert [e["provisional_rank"] for e in final.entries] == [1, 2]
    listed = app_client.get("/api/v1/admin/finals", headers=bearer(people.root[1])).json()
    assert [(f["id"], f["status"], f["planned"]) for f in listed] == [(final_id, "queued", 6)]
    # Nothing of it is a submission.
    with db.session_scope(rules) as session:
        assert session.scalar(select(func.count()).select_from(Submission)) == 3


def test_one_final_at_a_time_and_a_lost_one_is_retired(rules: Settings, people: People) -> None:
    _three_entries(rules, people)
    first = finals.finalize(rules, top_k=3, rounds=1)
    with pytest.raises(Conflict, match=f"Final {first.id} is waiting"):
        finals.finalize(rules, top_k=3, rounds=1)
    # Redis lost the job: the next final replaces it.
    _home_queue(rules).empty()
    second = finals.finalize(rules, top_k=3, rounds=1)
    statuses = {f.id: (f.status, f.message) for f in _finals(rules)}
    assert statuses[first.id][0] is FinalStatus.FAILED
    assert "lost from the queue" in (statuses[first.id][1] or "")
    assert statuses[second.id][0] is FinalStatus.QUEUED

    # Running with a fresh heartbeat: refused; silent past the timeout: retired.
    assert final_run._claim(rules, second.id, "w1")
    with pytest.raises(Conflict, match="is running on w1"):
        finals.finalize(rules, top_k=3, rounds=1)
    with db.session_scope(rules) as session:
        row = session.get(Final, second.id)
        assert row is not None
        row.heartbeat_at = utcnow() - timedelta(seconds=rules.heartbeat_timeout_s + 5)
    third = finals.finalize(rules, top_k=3, rounds=1)
    statuses = {f.id: (f.status, f.message) for f in _finals(rules)}
    assert statuses[second.id][0] is FinalStatus.FAILED
    assert "stopped responding" in (statuses[second.id][1] or "")
    assert statuses[third.id][0] is FinalStatus.QUEUED


def _measured(score: float, ci: tuple[float, float] | None = None) -> Outcome:
    return Outcome(SubmissionStatus.COMPLETED, metrics(score, ci), "hidden-run logs")


def _failed(reason: FailureReason) -> Outcome:
    return Outcome(SubmissionStatus.FAILED, None, "logs", reason, f"It failed: {reason.value}.")


def _run_with(settings: Settings, final_id: int, outcomes: dict[tuple[int, int], Outcome]) -> None:
    """What the worker does after its claim, each measurement's outcome given by
    (submission id, round)."""
    while (planned := final_run._next(settings, final_id, "worker-1")) is not None:
        final_run._store(settings, planned.id, outcomes[planned.submission_id, planned.round])
    final_run._finish(settings, final_id, FinalStatus.COMPLETED, "done")


def test_the_final_board_ranks_by_the_median_of_the_remeasurements(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    t0 = utcnow() - timedelta(hours=2)
    carol = make_user(rules, "carol", password=None)[0]
    dave = make_user(rules, "dave", password=None)[0]
    # Provisional: alice was lucky once; carol's decoder is flaky; dave's worker hiccuped.
    alice = add_submission(rules, people.alice[0], result_metrics=metrics(1.0), created_at=t0)
    bob = add_submission(
        rules, people.bob[0], result_metrics=metrics(2.0), created_at=t0 + timedelta(minutes=1)
    )
    carol_s = add_submission(
        rules, carol, result_metrics=metrics(2.5), created_at=t0 + timedelta(minutes=2)
    )
    dave_s = add_submission(
        rules, dave, result_metrics=metrics(3.0), created_at=t0 + timedelta(minutes=3)
    )
    assert app_client.get("/api/v1/leaderboard/final").status_code == 404
    usage_before = _usage(rules, [people.alice[0], people.bob[0], carol, dave])

    final = finals.finalize(rules, top_k=4, rounds=3)
    outcomes = {
        (alice, 1): _measured(5.0, (4.8, 5.2)),
        (alice, 2): _measured(5.4, (5.2, 5.6)),
        (alice, 3): _measured(5.1, (4.9, 5.3)),
        (bob, 1): _measured(2.1, (2.0, 2.2)),
        (bob, 2): _measured(2.0, (1.9, 2.1)),
        (bob, 3): _measured(2.2, (2.1, 2.3)),
        (carol_s, 1): _measured(2.4),
        (carol_s, 2): _failed(FailureReason.WRONG_OUTPUT),
        (carol_s, 3): _measured(2.4),
        (dave_s, 1): _measured(3.0, (2.9, 3.1)),
        (dave_s, 2): _failed(FailureReason.INFRASTRUCTURE),
        (dave_s, 3): _measured(3.2, (3.1, 3.3)),
    }
    assert final_run._claim(rules, final.id, "worker-1")
    assert app_client.get("/api/v1/leaderboard/final").status_code == 404  # running: unpublished
    _run_with(rules, final.id, outcomes)

    body = app_client.get("/api/v1/leaderboard/final").json()
    assert body["final"] is True and body["about"]["id"] == final.id
    assert [
        (e["rank"], e["participant"], e["score"], e["runs"], e["provisional_rank"])
        for e in body["entries"]
    ] == [
        (1, "bob", 2.1, 3, 2),
        (2, "dave", pytest.approx(3.1), 2, 4),
        (3, "alice", 5.1, 3, 1),
    ]
    assert [e["statistically_tied"] for e in body["entries"]] == [False, False, False]
    assert body["entries"][2]["score_ci"] == pytest.approx(
        [min(5.005, 4.9667), max(5.385, 5.3667)], abs=1e-3
    )
    assert body["entries"][2]["provisional_score"] == 1.0
    assert [(u["participant"], u["out"], u["failure_reason"]) for u in body["unranked"]] == [
        ("carol", "failed", "wrong_output")
    ]
    assert body["unranked"][0]["measured"] == 2 and body["unranked"][0]["failed"] == 1
    assert "It failed" not in str(body)  # sentences are for organisers

    # The provisional board is as it was, beside the final one.
    provisional = app_client.get("/api/v1/leaderboard").json()
    assert [e["participant"] for e in provisional["entries"]] == ["alice", "bob", "carol", "dave"]
    page = app_client.get("/leaderboard").text
    section = page[page.index('id="final-ranking"') : page.index("Provisional ranking")]
    assert section.index('data-participant="bob"') < section.index('data-participant="alice"')
    assert 'data-out="failed"' in section and "wrong_output" in section

    exported = app_client.get("/api/v1/admin/final-leaderboard.csv", headers=bearer(people.root[1]))
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["rank"], r["participant"], r["out"], r["runs"]) for r in rows] == [
        ("1", "bob", "", "3"),
        ("2", "dave", "", "2"),
        ("3", "alice", "", "3"),
        ("", "carol", "failed", "2"),
    ]
    assert rows[3]["failure_message"] == "It failed: wrong_output."
    listed = app_client.get("/api/v1/admin/finals", headers=bearer(people.root[1])).json()
    assert (listed[0]["status"], listed[0]["done"], listed[0]["failed"]) == ("completed", 12, 2)

    # Re-measurements are not submissions: nobody's limits moved.
    assert _usage(rules, [people.alice[0], people.bob[0], carol, dave]) == usage_before
    with db.session_scope(rules) as session:
        assert session.scalar(select(func.count()).select_from(Submission)) == 4

    # Disqualified since: out of the final too.
    app_client.post(
        f"/api/v1/admin/submissions/{bob}/disqualify", json={}, headers=bearer(people.root[1])
    )
    body = app_client.get("/api/v1/leaderboard/final").json()
    assert [e["participant"] for e in body["entries"]] == ["dave", "alice"]
    assert ("bob", "disqualified") in [(u["participant"], u["out"]) for u in body["unranked"]]


def _usage(settings: Settings, user_ids: list[int]) -> list[rules.Usage]:
    with db.session_scope(settings) as session:
        return [
            rules.usage(
                session,
                rules.Limits.from_settings(settings),
                user_id=u,
                now=utcnow().replace(microsecond=0),
            )
            for u in user_ids
        ]


def test_the_admin_page_button_starts_a_final_with_a_csrf_form(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    _three_entries(rules, people)
    with db.session_scope(rules) as session:
        root = accounts.user_by_name(session, "root")
        assert root is not None
        root.password_hash = _hash_of(PASSWORD)
    web_login(app_client, "root")
    page = app_client.get("/admin").text
    assert 'id="finals"' in page and "/admin/finals" in page
    forged = app_client.post(
        "/admin/finals",
        data={"csrf_token": "nope", "top_k": "2", "rounds": "2"},
        follow_redirects=False,
    )
    assert forged.status_code == 403
    assert _finals(rules) == []
    done = app_client.post(
        "/admin/finals",
        data={"csrf_token": csrf_from(page), "top_k": "2", "rounds": "2"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    (final,) = _finals(rules)
    assert (final.top_k, final.rounds, final.requested_by) == (2, 2, "root")
    listing = app_client.get("/admin").text
    assert f'id="final-{final.id}"' in listing and "queued" in listing


def test_edc_admin_finalize_and_finals(
    live_server: LiveServer, people: People, tmp_path: Path
) -> None:
    settings = live_server.settings
    _three_entries(settings, people)
    app = typer.Typer()
    cli_admin.register(app)
    env = {"EDC_CLI_CONFIG_DIR": str(tmp_path / "cli"), "EDC_SERVER": live_server.url}

    def run(token: str, *args: str) -> Any:
        get_settings.cache_clear()  # the settings come from the environment of each run
        try:
            return CliRunner().invoke(app, ["admin", *args], env={**env, "EDC_TOKEN": token})
        finally:
            get_settings.cache_clear()

    refused = run(people.alice[1], "finalize", "--top", "2", "--rounds", "2")
    assert refused.exit_code == 1 and "(admins) only" in refused.output
    started = run(people.root[1], "finalize", "--top", "2", "--rounds", "2")
    assert started.exit_code == 0, started.output
    (final,) = _finals(settings)
    assert f"Final {final.id} queued" in started.output
    listed = run(people.root[1], "finals")
    assert listed.exit_code == 0, listed.output
    assert "queued" in listed.output and "0/4" in listed.output
    again = run(people.root[1], "finalize")
    assert again.exit_code == 1 and "is waiting" in again.output

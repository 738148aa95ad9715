"""Final rankings without a sandbox: who may start one, its plan and job, the final board.

The measurements here are written by the worker's own storing code with fabricated outcomes;
tests/worker/test_final_run.py runs real re-measurements in the real sandbox.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from fastapi.testclient import TestClient
from rq import Queue
from sqlalchemy import func, select
from typer.testing import CliRunner

from edc import db
from edc.cli import admin as cli_admin
from edc.config import Settings, get_settings
from edc.errors import Conflict, FinalPublished
from edc.models import DEFAULT_TRACK, Final, Measurement, Submission, User, utcnow
from edc.scheduler import connection, final_queue, producer
from edc.scheduler.notify_queue import notification_queue
from edc.scheduler.position import NO_OWNER
from edc.services import accounts, finals, rules, teams
from edc.services.phases import open_final
from edc.services.tracks import add_track, list_tracks, set_track_webhook
from edc.status import FailureReason, FinalStatus, SubmissionStatus
from edc.worker import final_run
from edc.worker.executor import Outcome
from tests.support.competition import (
    PASSWORD,
    _hash_of,
    add_submission,
    bearer,
    csrf_from,
    make_user,
    metrics,
    upload,
    web_login,
    zip_of,
)
from tests.support.live_server import LiveServer, People
from tests.support.platform import quick_task


def _home_queue(settings: Settings) -> Queue:
    return Queue(
        producer.queue_name_for(settings, "cpu", NO_OWNER),
        connection=connection.redis_connection(settings),
    )


def _lose_queued_finals(settings: Settings) -> None:
    """Redis loses the finals' jobs, long enough after they were queued to count as lost (a
    final younger than finals.ENQUEUE_GRACE_S may be about to reach the queue)."""
    _home_queue(settings).empty()
    with db.session_scope(settings) as session:
        for final in session.scalars(select(Final).where(Final.status == FinalStatus.QUEUED)):
            final.created_at = utcnow() - timedelta(seconds=finals.ENQUEUE_GRACE_S + 1)


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
    # A final just committed whose job is not on the queue yet is not taken for lost.
    _home_queue(rules).empty()
    with pytest.raises(Conflict, match=f"Final {first.id} is waiting"):
        finals.finalize(rules, top_k=3, rounds=1)
    # Redis lost the job: the next final replaces it.
    _lose_queued_finals(rules)
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


def _admin_page(app_client: TestClient, settings: Settings) -> str:
    """The admin page, for root logged in on the web with a password."""
    with db.session_scope(settings) as session:
        root = accounts.user_by_name(session, "root")
        assert root is not None
        root.password_hash = _hash_of(PASSWORD)
    web_login(app_client, "root")
    return app_client.get("/admin").text


def test_the_admin_page_button_starts_a_final_with_a_csrf_form(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    _three_entries(rules, people)
    page = _admin_page(app_client, rules)
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


def _admin_cli(server: LiveServer, tmp_path: Path) -> Callable[..., Any]:
    """``run(token, *args)``: ``edc admin *args`` against ``server`` with that token."""
    app = typer.Typer()
    cli_admin.register(app)
    env = {
        "EDC_CLI_CONFIG_DIR": str(tmp_path / "cli"),
        "EDC_SERVER": server.url,
        "COLUMNS": "200",  # a sentence on one line
    }

    def run(token: str, *args: str) -> Any:
        get_settings.cache_clear()  # the settings come from the environment of each run
        try:
            return CliRunner().invoke(app, ["admin", *args], env={**env, "EDC_TOKEN": token})
        finally:
            get_settings.cache_clear()

    return run


def test_edc_admin_finalize_and_finals(
    live_server: LiveServer, people: People, tmp_path: Path
) -> None:
    settings = live_server.settings
    _three_entries(settings, people)
    run = _admin_cli(live_server, tmp_path)
    refused = run(people.alice[1], "finalize", "--top", "2", "--rounds", "2")
    assert refused.exit_code == 1 and "(admins) only" in refused.output
    started = run(people.root[1], "finalize", "--top", "2", "--rounds", "2")
    assert started.exit_code == 0, started.output
    (final,) = _finals(settings)
    assert f"Final {final.id} queued" in started.output
    assert "Track default is in its final phase: uploads are closed." in started.output
    listed = run(people.root[1], "finals")
    assert listed.exit_code == 0, listed.output
    assert "queued" in listed.output and "0/4" in listed.output
    again = run(people.root[1], "finalize")
    assert again.exit_code == 2 and "is waiting" in again.output


# --- one path: a track's final phase, whoever opens it ---


def _track(settings: Settings, folder: Path, name: str, **window: Any) -> None:
    with db.session_scope(settings) as session:
        add_track(session, settings, name=name, task_dir=quick_task(folder / name), **window)


def _upload_to(server: LiveServer, token: str, track: str | None) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/v1/submissions",
        headers=bearer(token),
        data={"track": track} if track else {},
        files={"file": ("s.zip", zip_of(), "application/zip")},
        timeout=30,
    )


def _phases(settings: Settings) -> dict[str, str]:
    with db.session_scope(settings) as session:
        return {t.name: t.phase for t in list_tracks(session, settings)}


def _published(body: dict[str, Any]) -> dict[str, Any]:
    """A final board as published, less the time it was read."""
    return {k: v for k, v in body.items() if k != "generated_at"}


def test_edc_admin_finalize_opens_one_tracks_final_phase_and_never_publishes_twice(
    live_server: LiveServer, people: People, tmp_path: Path
) -> None:
    s, url, root = live_server.settings, live_server.url, people.root[1]
    _track(s, tmp_path, "gpu")
    _track(s, tmp_path, "late", closes_at=utcnow() + timedelta(days=1))
    on_gpu = add_submission(s, people.alice[0], result_metrics=metrics(1.0), track="gpu")
    add_submission(s, people.bob[0], result_metrics=metrics(2.0))
    run = _admin_cli(live_server, tmp_path)

    unknown = run(root, "finalize", "--track", "nope")
    assert unknown.exit_code == 2, unknown.output
    assert "no track 'nope'; the tracks are: default, gpu, late" in unknown.output
    early = run(root, "finalize", "--track", "late")
    assert early.exit_code == 2 and "opens at or after the track's end" in early.output
    assert _finals(s) == []
    assert _phases(s) == {"default": "development", "gpu": "development", "late": "development"}

    started = run(root, "finalize", "--track", "gpu", "--top", "1", "--rounds", "1")
    assert started.exit_code == 0, started.output
    assert "Track gpu is in its final phase: uploads are closed." in started.output
    (first,) = _finals(s)
    assert (first.track, first.status, first.requested_by) == ("gpu", FinalStatus.QUEUED, "root")
    # Uploads close on that track only.
    assert _phases(s) == {"default": "development", "gpu": "final", "late": "development"}
    closed = _upload_to(live_server, people.alice[1], "gpu")
    assert closed.status_code == 403 and "final phase" in closed.json()["detail"]
    assert _upload_to(live_server, people.alice[1], None).status_code == 201
    assert _upload_to(live_server, people.alice[1], "late").status_code == 201

    # Measurements outstanding: a final still waiting is not replaced; one lost is retried.
    waiting = run(root, "finalize", "--track", "gpu", "--top", "1", "--rounds", "1")
    assert waiting.exit_code == 2 and f"Final {first.id} is waiting" in waiting.output
    _lose_queued_finals(s)
    retried = run(root, "finalize", "--track", "gpu", "--top", "1", "--rounds", "1")
    assert retried.exit_code == 0, retried.output
    lost, second = _finals(s)
    assert (lost.status, second.status) == (FinalStatus.FAILED, FinalStatus.QUEUED)

    assert httpx.get(f"{url}/api/v1/tracks/gpu/leaderboard/final").status_code == 404
    assert final_run._claim(s, second.id, "worker-1")
    _run_with(s, second.id, {(on_gpu, 1): _measured(0.9)})
    published = httpx.get(f"{url}/api/v1/tracks/gpu/leaderboard/final").json()
    assert published["about"]["id"] == second.id and published["about"]["track"] == "gpu"
    assert [(e["rank"], e["submission_id"], e["score"]) for e in published["entries"]] == [
        (1, on_gpu, 0.9)
    ]
    # The default track has no final of its own.
    assert httpx.get(f"{url}/api/v1/tracks/default/leaderboard/final").status_code == 404
    assert httpx.get(f"{url}/api/v1/leaderboard/final").status_code == 404

    # Published: never changed, by the command or by anything calling finalize.
    jobs = _home_queue(s).get_job_ids()
    again = run(root, "finalize", "--track", "gpu", "--top", "1", "--rounds", "1")
    assert again.exit_code == 2, again.output
    assert "a published final is never changed" in again.output
    with pytest.raises(FinalPublished, match=f"final {second.id}"):
        finals.finalize(s, top_k=1, rounds=1, track="gpu")
    assert len(_finals(s)) == 2 and _home_queue(s).get_job_ids() == jobs
    after = httpx.get(f"{url}/api/v1/tracks/gpu/leaderboard/final").json()
    assert _published(after) == _published(published)

    exported = run(root, "export", "final-leaderboard", "--track", "gpu")
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [(r["final_id"], r["rank"], r["submission_id"]) for r in rows] == [
        (str(second.id), "1", str(on_gpu))
    ]
    none_yet = run(root, "export", "final-leaderboard", "--track", "late")
    assert none_yet.exit_code == 1 and "of the track 'late' has completed" in none_yet.output
    mixed = run(root, "export", "leaderboard", "--track", "gpu")
    assert mixed.exit_code == 2


def test_the_api_and_the_admin_page_open_a_tracks_final_phase(
    app_client: TestClient, rules: Settings, people: People, tmp_path: Path
) -> None:
    _track(rules, tmp_path, "gpu")
    _track(rules, tmp_path, "late", closes_at=utcnow() + timedelta(days=1))
    on_gpu = add_submission(rules, people.alice[0], result_metrics=metrics(1.0), track="gpu")
    on_default = add_submission(rules, people.bob[0], result_metrics=metrics(2.0))
    admin = bearer(people.root[1])

    def start(body: dict[str, Any]) -> Any:
        return app_client.post("/api/v1/admin/finals", json=body, headers=admin)

    unknown = start({"track": "nope"})
    assert unknown.status_code == 404
    assert "the tracks are: default, gpu, late" in unknown.json()["detail"]
    early = start({"track": "late"})
    assert early.status_code == 409 and "track's end" in early.json()["detail"]
    assert _finals(rules) == []

    # The page: a track to choose, as there are several.
    page = _admin_page(app_client, rules)
    assert 'id="final-track"' in page and '<option value="gpu">gpu</option>' in page
    done = app_client.post(
        "/admin/finals",
        data={"csrf_token": csrf_from(page), "track": "gpu", "top_k": "1", "rounds": "1"},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    (final,) = _finals(rules)
    assert (final.track, final.requested_by) == ("gpu", "root")
    assert _phases(rules) == {"default": "development", "gpu": "final", "late": "development"}
    assert upload(app_client, people.alice[1], track="gpu").status_code == 403
    assert upload(app_client, people.alice[1]).status_code == 201
    assert 'data-phase="final"' in app_client.get("/admin").text

    # The API without a track: the default one's phase.
    default = start({"top_k": 1, "rounds": 1})
    assert default.status_code == 201, default.text
    assert default.json()["track"] is None
    assert _phases(rules)["default"] == "final"
    assert upload(app_client, people.bob[1]).status_code == 403

    for row, picked in ((final.id, on_gpu), (default.json()["id"], on_default)):
        assert final_run._claim(rules, row, "worker-1")
        _run_with(rules, row, {(picked, 1): _measured(1.5)})
    gpu_board = app_client.get("/api/v1/tracks/gpu/leaderboard/final")
    assert gpu_board.status_code == 200
    assert [e["submission_id"] for e in gpu_board.json()["entries"]] == [on_gpu]
    default_board = app_client.get("/api/v1/tracks/default/leaderboard/final").json()
    assert _published(default_board) == _published(
        app_client.get("/api/v1/leaderboard/final").json()
    )
    assert [e["submission_id"] for e in default_board["entries"]] == [on_default]
    # A final of another track is not this track's, by id either.
    mismatched = f"/api/v1/tracks/gpu/leaderboard/final?final_id={default.json()['id']}"
    assert app_client.get(mismatched).status_code == 404
    by_id = app_client.get(f"/api/v1/tracks/gpu/leaderboard/final?final_id={final.id}")
    assert _published(by_id.json()) == _published(gpu_board.json())
    missing = app_client.get("/api/v1/tracks/nope/leaderboard/final")
    assert missing.status_code == 404 and "default, gpu, late" in missing.json()["detail"]

    # Published: a second final is refused, and the board stays as it was.
    refused = start({"track": "gpu", "top_k": 1, "rounds": 1})
    assert refused.status_code == 409
    assert "a published final is never changed" in refused.json()["detail"]
    assert len(_finals(rules)) == 2
    after = app_client.get("/api/v1/tracks/gpu/leaderboard/final").json()
    assert _published(after) == _published(gpu_board.json())
    csv_of_gpu = app_client.get("/api/v1/admin/final-leaderboard.csv?track=gpu", headers=admin)
    assert csv_of_gpu.status_code == 200
    assert [r["submission_id"] for r in csv.DictReader(io.StringIO(csv_of_gpu.text))] == [
        str(on_gpu)
    ]


def test_a_teams_final_entry_is_named_by_the_team(rules: Settings, people: People) -> None:
    with db.session_scope(rules) as session:
        alice = session.get(User, people.alice[0])
        assert alice is not None
        teams.create_team(session, rules, user=alice, name="fast-decoders")
        set_track_webhook(session, rules, DEFAULT_TRACK, url="http://127.0.0.1:9/hook")
    alices = add_submission(rules, people.alice[0], result_metrics=metrics(1.0))
    bobs = add_submission(rules, people.bob[0], result_metrics=metrics(2.0))
    final = open_final(rules, None, top_k=2, rounds=1, requested_by="root")
    assert [e["participant"] for e in final.entries] == ["fast-decoders", "bob"]
    scores = {alices: 1.1, bobs: 2.1}
    while (planned := final_run._next(rules, final.id, "worker-1")) is not None:
        final_run._store(rules, planned.id, _measured(scores[planned.submission_id]))
    # The worker's run: claimed, nothing left to measure, completed, hence published.
    assert final_run.run(rules, final.id, worker_id="worker-1") is FinalStatus.COMPLETED
    with db.session_scope(rules) as session:
        board = finals.latest_board(session)
        assert board is not None
        # Named by the team on the board and in its CSV, as on the provisional board.
        assert [s.participant for s in board.ranked] == ["fast-decoders", "bob"]
        text = finals.csv_text(board)
        assert "fast-decoders" in text and "alice" not in text
    # ... and in the message the webhook is sent.
    (job,) = notification_queue(rules).get_jobs()
    track, message = job.args
    assert (track, message["event"], message["participant"]) == (
        DEFAULT_TRACK,
        "final_published",
        "fast-decoders",
    )
    assert "rank 1 of 2 is fast-decoders" in message["text"]

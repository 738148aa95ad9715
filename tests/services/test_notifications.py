"""A track's webhook, told by a real HTTP receiver on loopback: a new rank 1 once, a published
final once, a failing receiver retried, a dead one never failing the submission, and the URL set
from the command line and never shown publicly.

Deliveries run as RQ jobs, taken by a worker in burst mode like every other job."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from edc import db
from edc.cli.main import app as edc_app
from edc.config import Settings, get_settings
from edc.models import DEFAULT_TRACK, Final, Submission, Track, utcnow
from edc.scheduler import fair_worker, producer
from edc.scheduler.notify_queue import notification_queue
from edc.services import finals, notifications
from edc.services.leaderboard import Entry, Ranking
from edc.services.tracks import TrackInfo, get_track, set_track_webhook
from edc.status import FinalStatus, SubmissionStatus
from edc.worker import final_run, remeasure
from edc.worker.executor import Outcome
from tests.harness.conftest import example_source
from tests.support.competition import add_submission, make_user, metrics
from tests.support.databases import postgres_only
from tests.support.live_server import People
from tests.support.platform import free_port, quick_task

# The part of a webhook URL that is the key to the channel: it must never reach a log.
SECRET = "T0001/B0002/s3cr3t-t0k3n"


class Receiver:
    """A webhook on 127.0.0.1 that records every body it is sent and answers each request with
    the next of ``statuses`` (then 200)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[int, dict[str, Any]]] = []  # (status answered, body)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.requests.append((status, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/{SECRET}"

    @property
    def taken(self) -> list[dict[str, Any]]:
        """The bodies it answered with a success."""
        with self.lock:
            return [body for status, body in self.requests if status < 300]


@pytest.fixture
def make_receiver() -> Iterator[Any]:
    servers: list[Receiver] = []

    def make(statuses: list[int] | None = None) -> Receiver:
        receiver = Receiver(statuses or [])
        threading.Thread(target=receiver.server.serve_forever, daemon=True).start()
        servers.append(receiver)
        return receiver

    yield make
    for receiver in servers:
        receiver.server.shutdown()
        receiver.server.server_close()


def _hook(settings: Settings, url: str | None, track: str = DEFAULT_TRACK) -> None:
    with db.session_scope(settings) as session:
        set_track_webhook(session, settings, track, url=url)


def _deliver_all(settings: Settings) -> None:
    """Run every waiting job, notifications included, as a worker does."""
    fair_worker.make_worker(settings, name="notifier").work(burst=True)
    assert notification_queue(settings).count == 0


def _stored_baseline(settings: Settings) -> tuple[str, str]:
    """The baseline example as an uploaded archive: (file path, sha256)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("submission.py", example_source("baseline"))
    data = buffer.getvalue()
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    (settings.uploads_dir / "baseline.zip").write_bytes(data)
    return "uploads/baseline.zip", hashlib.sha256(data).hexdigest()


def _evaluate_for_real(settings: Settings, user_id: int) -> Submission:
    """A queued submission of the baseline, evaluated by a worker in the real sandbox."""
    file_path, sha256 = _stored_baseline(settings)
    submission_id = add_submission(
        settings, user_id, status=SubmissionStatus.QUEUED, file_path=file_path, sha256=sha256
    )
    producer.enqueue_submission(settings, submission_id)
    _deliver_all(settings)
    with db.session_scope(settings) as session:
        row = session.get(Submission, submission_id)
        assert row is not None
        session.expunge(row)
        return row


@pytest.fixture
def worker_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    task = quick_task(tmp_path_factory.mktemp("task") / "task")
    return settings.model_copy(update={"task_dir": task, "max_attempts": 1})


@pytest.mark.usefixtures("worker_environment")
@postgres_only
def test_a_result_that_takes_rank_1_is_announced_once_retried_until_taken(
    worker_settings: Settings, make_receiver: Any
) -> None:
    s = worker_settings
    alice = make_user(s, "alice", password=None)[0]
    # The receiver fails twice, then takes it: the third try delivers.
    receiver = make_receiver([500, 500])
    _hook(s, receiver.url)

    row = _evaluate_for_real(s, alice)
    assert row.status is SubmissionStatus.COMPLETED, row.failure_message
    assert [status for status, _ in receiver.requests] == [500, 500, 200]
    (message,) = receiver.taken
    assert message["event"] == "rank_one" and message["track"] == DEFAULT_TRACK
    assert (message["participant"], message["score"]) == ("alice", row.score)
    assert message["metric"] == _ranking(s).metric
    assert message["link"] is None  # no portal address configured
    # One body for both: Slack posts "text", Discord "content".
    for key in ("text", "content"):
        assert message[key].startswith("New rank 1 on track default: alice, ")

    # The board computed again (the same leader): nothing new is sent.
    notifications.announce_leader(s, row.id)
    _deliver_all(s)
    assert len(receiver.requests) == 3


def _ranking(settings: Settings) -> Ranking:
    with db.session_scope(settings) as session:
        return get_track(session, settings, None).ranking()


def test_each_new_leader_is_announced_and_nobody_twice(
    settings: Settings, people: People, make_receiver: Any, worker_environment: None
) -> None:
    s = settings
    receiver = make_receiver()
    _hook(s, receiver.url)
    assert _ranking(s).direction == "lower"

    def completes(user_id: int, score: float) -> int:
        # As the worker does: the result stored, then the board looked at.
        submission_id = add_submission(s, user_id, result_metrics=metrics(score))
        notifications.announce_leader(s, submission_id)
        _deliver_all(s)
        return submission_id

    completes(people.alice[0], 5.0)
    assert [(m["participant"], m["score"]) for m in receiver.taken] == [("alice", 5.0)]
    completes(people.bob[0], 9.0)  # worse: alice still leads
    assert len(receiver.requests) == 1
    bob_best = completes(people.bob[0], 2.0)  # better, by someone else
    assert [(m["participant"], m["score"]) for m in receiver.taken] == [
        ("alice", 5.0),
        ("bob", 2.0),
    ]
    with db.session_scope(s) as session:
        leader = session.scalar(select(Track.announced_leader).where(Track.name == DEFAULT_TRACK))
    assert leader == bob_best

    # Switched off: nothing is sent, whoever leads.
    _hook(s, None)
    completes(people.alice[0], 1.0)
    assert len(receiver.requests) == 2


def test_two_workers_finishing_at_once_announce_the_leader_once(
    settings: Settings, people: People
) -> None:
    _hook(settings, "http://127.0.0.1:9/hook")  # never called: the jobs are only counted
    first = add_submission(settings, people.alice[0], result_metrics=metrics(3.0))
    second = add_submission(settings, people.bob[0], result_metrics=metrics(4.0))
    start = threading.Barrier(2)

    def finish(submission_id: int) -> None:
        start.wait()
        notifications.announce_leader(settings, submission_id)

    workers = [threading.Thread(target=finish, args=(sid,)) for sid in (first, second)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    (job,) = notification_queue(settings).get_jobs()
    assert job.args[1]["participant"] == "alice"


@pytest.mark.usefixtures("worker_environment")
@postgres_only
def test_a_webhook_that_refuses_connections_never_fails_the_submission(
    worker_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    s = worker_settings
    dead = f"http://127.0.0.1:{free_port()}/hooks/{SECRET}"
    _hook(s, dead)
    alice = make_user(s, "alice", password=None)[0]

    row = _evaluate_for_real(s, alice)
    # Announced (its delivery failed, in its own job): the result stands, the job ended.
    assert row.status is SubmissionStatus.COMPLETED, row.failure_message
    assert notification_queue(s).failed_job_registry.count == 0
    with db.session_scope(s) as session:
        announced = session.scalar(select(Track.announced_leader).where(Track.name == "default"))
        assert announced == row.id

    # What that job logged (seen here, in this process): the host, never the URL's secret.
    caplog.set_level(logging.INFO, logger="edc.services.notifications")
    get_settings.cache_clear()
    notifications.deliver(DEFAULT_TRACK, {"event": "rank_one", "text": "t", "content": "t"})
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "127.0.0.1" in warnings[0].getMessage()
    assert "ConnectError" in warnings[0].getMessage()
    tries = [r for r in caplog.records if "try" in r.getMessage()]
    assert len(tries) == notifications.TRIES - 1
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_a_refusal_that_would_answer_the_same_is_not_retried(make_receiver: Any) -> None:
    gone = make_receiver([404])  # a webhook deleted on Slack's side answers 404 for good
    assert not notifications.post(gone.url, {"event": "rank_one"}, what="a test")
    assert [status for status, _ in gone.requests] == [404]
    busy = make_receiver([429])  # a rate limit passes
    assert notifications.post(busy.url, {"event": "rank_one"}, what="a test")
    assert [status for status, _ in busy.requests] == [429, 200]


def _measured(score: float) -> Outcome:
    return Outcome(SubmissionStatus.COMPLETED, metrics(score), "hidden-run logs")


def test_a_published_final_is_announced_once(
    settings: Settings, people: People, make_receiver: Any, worker_environment: None
) -> None:
    s = settings
    receiver = make_receiver()
    alice = add_submission(s, people.alice[0], result_metrics=metrics(1.0))
    bob = add_submission(s, people.bob[0], result_metrics=metrics(2.0))
    final = finals.finalize(s, top_k=2, rounds=1)
    _hook(s, receiver.url)
    # Re-measured the other way round: bob wins the final.
    scores = {alice: 3.0, bob: 1.5}
    while (planned := final_run._next(s, final.id, "worker-1")) is not None:
        final_run._store(s, planned.id, _measured(scores[planned.submission_id]))

    # The worker's run: claimed, nothing left to measure, completed, hence published.
    assert final_run.run(s, final.id, worker_id="worker-1") is FinalStatus.COMPLETED
    assert final_run.run(s, final.id, worker_id="worker-2") is None  # a duplicate delivery
    _deliver_all(s)  # the final's own job, delivered twice over, finds it done
    (message,) = receiver.taken
    assert message["event"] == "final_published" and message["track"] == DEFAULT_TRACK
    assert (message["participant"], message["score"]) == ("bob", 1.5)
    assert message["text"].startswith(
        "The final leaderboard of track default is published: rank 1 of 2 is bob, "
    )
    with db.session_scope(s) as session:
        done = session.get(Final, final.id)
        assert done is not None and done.status is FinalStatus.COMPLETED


def test_names_cannot_format_the_message_or_mention_anyone(settings: Settings) -> None:
    entry = Entry(
        rank=1,
        participant="<!channel> *@everyone*",
        submission_id=1,
        score=1.0,
        score_ci=None,
        tied_with_above=False,
        tpot_p50_ms=None,
        ttft_p50_ms=None,
        tokens_per_s=None,
        submitted_at=utcnow(),
        is_baseline=False,
    )
    portal = settings.model_copy(update={"portal_url": "https://edc.example/"})
    message = notifications.rank_one_message(portal, _ranking(settings), entry)
    assert "&lt;!channel&gt;" in message["text"] and "<!channel>" not in message["text"]
    assert r"\*@everyone\*" in message["content"]
    assert message["allowed_mentions"] == {"parse": []}
    assert message["participant"] == "<!channel> *@everyone*"  # the structured field as is
    # The board's page, where the portal's address is known.
    assert message["link"] == "https://edc.example/leaderboard"
    assert message["text"].endswith(" https://edc.example/leaderboard")
    assert (
        notifications.board_link(portal, "gpu-1") == "https://edc.example/leaderboard?track=gpu-1"
    )
    # The public address, where one is given, over the workers' (maybe internal) one.
    public = portal.model_copy(update={"public_url": "https://decode.example"})
    assert notifications.board_link(public, DEFAULT_TRACK) == "https://decode.example/leaderboard"


def test_edc_track_webhook_sets_clears_and_refuses(
    settings: Settings, app_client: TestClient, tmp_path: Path
) -> None:
    env = {
        "EDC_DATABASE_URL": settings.resolved_database_url,
        "EDC_DATA_DIR": str(tmp_path),
        "COLUMNS": "200",  # each message on one line
    }
    runner = CliRunner()
    url = f"https://hooks.slack.example/services/{SECRET}"

    def webhook(*args: str) -> Any:
        get_settings.cache_clear()
        try:
            return runner.invoke(edc_app, ["track", "webhook", *args], env=env)
        finally:
            get_settings.cache_clear()

    def track() -> TrackInfo:
        with db.session_scope(settings) as session:
            return get_track(session, settings, None)

    result = webhook("default", url)
    assert result.exit_code == 0, result.output
    assert "Track default: notifications are posted to its webhook." in result.output
    assert SECRET not in result.output  # a secret is not echoed
    assert track().webhook_url == url

    for refused, why in (
        ("ftp://files.example/hook", "must be an http:// or https:// URL with a host"),
        ("https://", "must be an http:// or https:// URL with a host"),
        ("https://x.example/" + "a" * 1024, "at most 1024 characters"),
    ):
        result = webhook("default", refused)
        assert result.exit_code == 2 and "Cannot set the webhook" in result.output, refused
        assert why in result.output, result.output
    result = webhook("nope", url)
    assert result.exit_code == 2 and "no track 'nope'" in result.output
    result = webhook("default", url, "--off")
    assert result.exit_code == 2 and "not both" in result.output
    assert track().webhook_url == url  # every refusal left it as it was

    # Never on the public pages or API, nor in what a log line would print of the track.
    for path in ("/api/v1/tracks", "/leaderboard", "/api/v1/leaderboard"):
        response = app_client.get(path)
        assert response.status_code == 200 and SECRET not in response.text, path
    assert SECRET not in repr(track())

    result = webhook("default", "--off")
    assert result.exit_code == 0, result.output
    assert "Track default: notifications are sent nowhere." in result.output
    assert track().webhook_url is None


def test_a_remeasured_result_that_takes_rank_1_is_announced(
    settings: Settings, people: People, make_receiver: Any, worker_environment: None
) -> None:
    s = settings
    receiver = make_receiver()
    _hook(s, receiver.url)
    leader = add_submission(s, people.bob[0], result_metrics=metrics(5.0))
    notifications.announce_leader(s, leader)
    # Alice's result went stale (the task changed, see edc.services.rescore): off the board.
    stale = {**metrics(9.0), "score": None, "stale": True, "stale_version": "v-old"}
    alice = add_submission(s, people.alice[0], result_metrics=stale)
    _deliver_all(s)
    assert [m["participant"] for m in receiver.taken] == ["bob"]

    # Measured again, it takes rank 1: announced, as after a submission's result.
    assert remeasure._store(s, alice, 1, stale, _measured(2.0))
    _deliver_all(s)
    assert [(m["participant"], m["score"]) for m in receiver.taken] == [
        ("bob", 5.0),
        ("alice", 2.0),
    ]
    with db.session_scope(s) as session:
        announced = session.scalar(select(Track.announced_leader).where(Track.name == "default"))
    assert announced == alice

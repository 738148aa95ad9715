"""/metrics against a real database and a real worker registry (SQLite and PostgreSQL)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from rq.job import Job
from rq.utils import utcformat
from sqlalchemy import update

from edc import db
from edc.config import Settings
from edc.models import Submission, utcnow
from edc.observability import prometheus
from edc.portal.app import create_app
from edc.scheduler.fair_worker import make_worker
from edc.scheduler.fleet import drifting_key
from edc.scheduler.producer import enqueue_submission, job_id_for
from edc.status import FailureReason, SubmissionStatus
from tests.observability.scrape import scrape, scrape_until, value


def add(
    settings: Settings,
    status: SubmissionStatus,
    *,
    size: int = 1000,
    hardware_class: str = "cpu",
    waited_s: float = 0.0,
    ran_s: float | None = None,
    reason: FailureReason | None = None,
    metrics: dict[str, Any] | None = None,
) -> int:
    now = utcnow()
    with db.session_scope(settings) as session:
        row = Submission(
            status=status,
            file_path=f"uploads/{size}.zip",
            sha256="0" * 64,
            size_bytes=size,
            original_filename="s.zip",
            created_at=now - timedelta(seconds=waited_s),
            queued_at=now - timedelta(seconds=waited_s),
            started_at=now - timedelta(seconds=ran_s) if ran_s is not None else None,
            finished_at=now if ran_s is not None else None,
            failure_reason=reason,
            result_metrics=metrics,
            hardware_class=hardware_class,
        )
        session.add(row)
        session.flush()
        return row.id


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def test_values_follow_the_database(settings: Settings, client: TestClient) -> None:
    queued = [
        add(settings, SubmissionStatus.QUEUED, size=100, waited_s=120),
        add(settings, SubmissionStatus.QUEUED, size=200, waited_s=5),
        add(settings, SubmissionStatus.QUEUED, size=300, hardware_class="h100", waited_s=30),
    ]
    add(settings, SubmissionStatus.PROCESSING, size=400, ran_s=1)
    add(
        settings,
        SubmissionStatus.COMPLETED,
        size=500,
        ran_s=3,
        metrics={"load_s": 0.3, "sandbox_start_s": 0.2},
    )
    add(
        settings,
        SubmissionStatus.COMPLETED,
        size=600,
        ran_s=40,
        metrics={"load_s": 4.0, "sandbox_start_s": 1.5},
    )
    add(settings, SubmissionStatus.FAILED, size=700, ran_s=7, reason=FailureReason.CRASHED)
    add(settings, SubmissionStatus.FAILED, size=800, ran_s=0.5, reason=FailureReason.INFRASTRUCTURE)
    add(settings, SubmissionStatus.CANCELLED, size=900)

    samples = scrape(client)

    assert value(samples, "edc_metrics_source_up", source="database") == 1
    assert value(samples, "edc_queue_depth", hardware_class="cpu") == 2
    assert value(samples, "edc_queue_depth", hardware_class="h100") == 1
    assert 120 <= value(samples, "edc_queue_oldest_age_seconds", hardware_class="cpu") < 180
    assert 30 <= value(samples, "edc_queue_oldest_age_seconds", hardware_class="h100") < 90

    def submissions(status: str, reason: str = "") -> float:
        return value(samples, "edc_submissions", status=status, reason=reason)

    assert submissions("queued") == 3
    assert submissions("processing") == 1
    assert submissions("completed") == 2
    assert submissions("failed", "crashed") == 1
    assert submissions("failed", "infrastructure") == 1
    assert submissions("failed", "wrong_output") == 0  # present before the first one
    assert submissions("cancelled") == 1
    assert value(samples, "edc_uploads_total") == 9
    assert value(samples, "edc_uploaded_bytes_total") == sum(range(100, 1000, 100))

    def evaluation(le: str, status: str = "completed") -> float:
        return value(
            samples,
            "edc_evaluation_duration_seconds_bucket",
            hardware_class="cpu",
            status=status,
            le=le,
        )

    assert [evaluation(le) for le in ("1.0", "2.0", "5.0", "30.0", "60.0", "+Inf")] == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]
    completed = {"hardware_class": "cpu", "status": "completed"}
    assert value(samples, "edc_evaluation_duration_seconds_count", **completed) == 2
    assert value(samples, "edc_evaluation_duration_seconds_sum", **completed) == pytest.approx(
        43, abs=0.05
    )
    assert [evaluation(le, "failed") for le in ("1.0", "5.0", "10.0", "+Inf")] == [1, 1, 2, 2]

    def histogram(name: str, le: str) -> float:
        return value(samples, f"{name}_bucket", hardware_class="cpu", le=le)

    assert [histogram("edc_sandbox_start_seconds", le) for le in ("0.1", "0.25", "2.0")] == [
        0,
        1,
        2,
    ]
    assert value(samples, "edc_sandbox_start_seconds_sum", hardware_class="cpu") == pytest.approx(
        1.7
    )
    assert [histogram("edc_submission_load_seconds", le) for le in ("0.25", "0.5", "5.0")] == [
        0,
        1,
        2,
    ]
    assert value(samples, "edc_submission_load_seconds_sum", hardware_class="cpu") == pytest.approx(
        4.3
    )
    # A class with waiting work but nothing finished has its series, at zero.
    assert value(samples, "edc_sandbox_start_seconds_count", hardware_class="h100") == 0

    # The next scrape reads the database again.
    with db.session_scope(settings) as session:
        session.execute(
            update(Submission)
            .where(Submission.id == queued[0])
            .values(status=SubmissionStatus.PROCESSING, started_at=utcnow())
        )
    again = scrape(client)
    assert value(again, "edc_queue_depth", hardware_class="cpu") == 1
    assert 5 <= value(again, "edc_queue_oldest_age_seconds", hardware_class="cpu") < 60
    assert value(again, "edc_submissions", status="processing", reason="") == 2


def completed_count(samples: Any) -> float:
    return value(
        samples, "edc_evaluation_duration_seconds_count", hardware_class="cpu", status="completed"
    )


def test_histograms_follow_every_finished_result(settings: Settings, client: TestClient) -> None:
    # Kept between scrapes, they must still move with each finished result, whoever writes it.
    def load_sum(samples: Any) -> float:
        return value(samples, "edc_submission_load_seconds_sum", hardware_class="cpu")

    first = add(settings, SubmissionStatus.COMPLETED, ran_s=3, metrics={"load_s": 0.5})
    assert completed_count(scrape(client)) == 1
    running = add(settings, SubmissionStatus.PROCESSING, ran_s=1)
    assert completed_count(scrape(client)) == 1

    with db.session_scope(settings) as session:  # the worker's result
        session.execute(
            update(Submission)
            .where(Submission.id == running)
            .values(status=SubmissionStatus.COMPLETED, result_metrics={"load_s": 2.0})
        )
    samples = scrape_until(client, lambda s: completed_count(s) == 2)
    assert completed_count(samples) == 2
    assert load_sum(samples) == pytest.approx(2.5)

    with db.session_scope(settings) as session:  # an organiser's rerun takes one out
        session.execute(
            update(Submission)
            .where(Submission.id == first)
            .values(status=SubmissionStatus.QUEUED, started_at=None, finished_at=None)
        )
    samples = scrape_until(client, lambda s: completed_count(s) == 1)
    assert completed_count(samples) == 1
    assert load_sum(samples) == pytest.approx(2.0)


def test_a_scrape_does_not_wait_for_histograms_being_computed_again(
    settings: Settings, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 100k rows a pass takes a few hundred milliseconds: a scrape answers with the last
    histograms meanwhile, and the next ones follow once the pass is done."""

    add(settings, SubmissionStatus.COMPLETED, ran_s=3)
    assert completed_count(scrape(client)) == 1
    computed = prometheus._compute_histograms
    slow_pass = threading.Event()

    def held_back(*args: Any) -> Any:
        slow_pass.wait(timeout=30)
        return computed(*args)

    monkeypatch.setattr(prometheus, "_compute_histograms", held_back)
    add(settings, SubmissionStatus.COMPLETED, ran_s=5)
    started = time.monotonic()
    assert completed_count(scrape(client)) == 1  # the last ones, not a wait for the pass
    assert completed_count(scrape(client)) == 1  # one pass at a time: still that one
    assert time.monotonic() - started < 10
    slow_pass.set()
    assert completed_count(scrape_until(client, lambda s: completed_count(s) == 2)) == 2


def test_an_empty_platform_reports_zeros(settings: Settings, client: TestClient) -> None:
    samples = scrape(client)
    assert value(samples, "edc_queue_depth", hardware_class="cpu") == 0
    assert value(samples, "edc_queue_oldest_age_seconds", hardware_class="cpu") == 0
    assert value(samples, "edc_uploads_total") == 0
    assert value(samples, "edc_workers_alive", hardware_class="cpu") == 0
    labels = {"hardware_class": "cpu", "status": "failed", "le": "+Inf"}
    assert value(samples, "edc_evaluation_duration_seconds_bucket", **labels) == 0


def test_workers_alive_busy_drifting_and_silent(settings: Settings, client: TestClient) -> None:
    idle = make_worker(settings, name="obs-idle")
    busy = make_worker(settings, name="obs-busy")
    silent = make_worker(settings, name="obs-silent")
    for worker in (idle, busy, silent):
        worker.register_birth()
    try:
        submission = add(settings, SubmissionStatus.QUEUED)
        enqueue_submission(settings, submission, 1)
        job = Job.fetch(job_id_for(submission, 1), connection=busy.connection)
        busy.prepare_execution(job)
        busy.set_state("busy")
        # A worker whose last beat is older than the liveness window (RQ keeps its hash a while).
        gone = utcnow() - timedelta(minutes=5)
        silent.connection.hset(silent.key, "last_heartbeat", utcformat(gone))
        # The drift watch bars a worker by naming it in a set beside the registry.
        idle.connection.sadd(drifting_key(settings), idle.name)

        samples = scrape(client)
    finally:
        for worker in (idle, busy, silent):
            worker.register_death()
    assert value(samples, "edc_metrics_source_up", source="queue") == 1
    assert value(samples, "edc_workers_alive", hardware_class="cpu") == 2
    assert value(samples, "edc_workers_busy", hardware_class="cpu") == 1
    assert value(samples, "edc_workers_drifting", hardware_class="cpu") == 1
    assert value(samples, "edc_workers_silent", hardware_class="cpu") == 1


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_source_that_is_down_is_reported_not_fatal(sqlite_settings: Settings) -> None:
    add(sqlite_settings, SubmissionStatus.QUEUED)
    no_redis = sqlite_settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{closed_port()}/0"}
    )
    with TestClient(create_app(no_redis)) as client:
        samples = scrape(client)
    assert value(samples, "edc_metrics_source_up", source="queue") == 0
    assert value(samples, "edc_metrics_source_up", source="database") == 1
    assert value(samples, "edc_queue_depth", hardware_class="cpu") == 1
    assert not any(name.startswith("edc_workers_") for name, _ in samples)

    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/nothing"
    no_database = sqlite_settings.model_copy(update={"database_url": url})
    with TestClient(create_app(no_database)) as client:
        samples = scrape(client)
    assert value(samples, "edc_metrics_source_up", source="database") == 0
    assert value(samples, "edc_workers_alive", hardware_class="cpu") == 0
    assert not any(name.startswith("edc_queue_") for name, _ in samples)

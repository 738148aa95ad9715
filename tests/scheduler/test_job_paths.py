"""RQ stores each job's function as a dotted path: a queue left by the previous release must drain
on this code. Every path a release has stored is enqueued here as a literal string (not through
the constants, which move with the code) and run by a real worker."""

from __future__ import annotations

import pytest
from rq import Queue
from rq.job import JobStatus

from edc.config import Settings
from edc.scheduler import (
    connection,
    fair_worker,
    final_queue,
    notify_queue,
    producer,
    remeasure_queue,
)
from edc.scheduler.position import NO_OWNER
from edc.status import SubmissionStatus
from tests.support.rows import get_submission, insert_submission

# Every job path any release has enqueued. Add to it, never remove from it.
SUBMISSION_JOB_PATHS = ["edc.worker.executor.process_submission"]
FINAL_JOB_PATHS = ["edc.worker.final_run.run_final"]
REMEASURE_JOB_PATHS = ["edc.worker.remeasure.remeasure_result"]
NOTIFICATION_JOB_PATHS = ["edc.services.notifications.deliver"]


def _home_queue(settings: Settings) -> Queue:
    """The cpu class's home queue, where finals and re-measurements wait."""
    return Queue(
        producer.queue_name_for(settings, "cpu", NO_OWNER),
        connection=connection.redis_connection(settings),
    )


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_attempts": 1})


def test_the_paths_enqueued_today_are_among_the_kept_ones() -> None:
    assert producer.JOB_FUNCTION in SUBMISSION_JOB_PATHS
    assert final_queue.JOB_FUNCTION in FINAL_JOB_PATHS
    assert remeasure_queue.JOB_FUNCTION in REMEASURE_JOB_PATHS
    assert notify_queue.JOB_FUNCTION in NOTIFICATION_JOB_PATHS


@pytest.mark.usefixtures("worker_environment")
@pytest.mark.parametrize("path", SUBMISSION_JOB_PATHS)
def test_a_submission_job_queued_under_a_kept_path_runs(
    worker_settings: Settings, path: str
) -> None:
    s = worker_settings
    # A queued row whose archive is gone: the job must claim it and fail it, which only the
    # executor does, so a finished row proves the stored path reached it.
    submission_id = insert_submission(s, file_path="uploads/gone.zip", hardware_class="cpu")
    queue = producer.submission_queue(s, submission_id)
    job = queue.enqueue_call(path, args=(submission_id,), kwargs={"attempt": 1})
    worker = fair_worker.make_worker(s, name="old-path", hardware_class="cpu")
    assert worker.work(burst=True)
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    row = get_submission(s, submission_id)
    assert row.status is SubmissionStatus.FAILED, row.failure_message
    assert row.worker_id == "old-path"


@pytest.mark.usefixtures("worker_environment")
@pytest.mark.parametrize("path", FINAL_JOB_PATHS)
def test_a_final_job_queued_under_a_kept_path_runs(worker_settings: Settings, path: str) -> None:
    s = worker_settings
    home = _home_queue(s)
    job = home.enqueue_call(path, args=(424242,))  # no such final: the job finds nothing to do
    worker = fair_worker.make_worker(s, name="old-final-path", hardware_class="cpu")
    assert worker.work(burst=True)
    assert job.get_status(refresh=True) == JobStatus.FINISHED


@pytest.mark.usefixtures("worker_environment")
@pytest.mark.parametrize("path", REMEASURE_JOB_PATHS)
def test_a_remeasure_job_queued_under_a_kept_path_runs(
    worker_settings: Settings, path: str
) -> None:
    s = worker_settings
    home = _home_queue(s)
    # No such submission: the job finds no stale result to measure again, and ends.
    job = home.enqueue_call(path, args=(424242, 1))
    worker = fair_worker.make_worker(s, name="old-remeasure-path", hardware_class="cpu")
    assert worker.work(burst=True)
    assert job.get_status(refresh=True) == JobStatus.FINISHED


@pytest.mark.usefixtures("worker_environment")
@pytest.mark.parametrize("path", NOTIFICATION_JOB_PATHS)
def test_a_notification_job_queued_under_a_kept_path_runs(
    worker_settings: Settings, path: str
) -> None:
    s = worker_settings
    # The arguments a release has enqueued (a track's name, the message); no such track, so no
    # webhook: the job logs that the message was not sent, and ends without posting anything.
    message = {"event": "rank_one", "text": "t", "content": "t"}
    job = notify_queue.notification_queue(s).enqueue_call(path, args=("no-such-track", message))
    worker = fair_worker.make_worker(s, name="old-notify-path", hardware_class="cpu")
    assert worker.work(burst=True)
    assert job.get_status(refresh=True) == JobStatus.FINISHED

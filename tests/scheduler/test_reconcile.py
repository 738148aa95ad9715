"""The reconciler rebuilds the queue from the database on real Redis, SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis

from edc.config import Settings
from edc.models import utcnow
from edc.scheduler import producer, reconcile
from edc.status import FailureReason, SubmissionStatus
from edc.worker import heartbeat
from tests.support.databases import postgres_only
from tests.support.rows import get_submission, insert_submission


def test_queued_rows_lost_by_redis_are_enqueued_again(settings: Settings) -> None:
    ids = [insert_submission(settings) for _ in range(3)]
    producer.enqueue_submission(settings, ids[0])
    redis.Redis.from_url(str(settings.redis_url)).delete(
        producer.submission_queue(settings, ids[0]).key
    )

    report = reconcile.reconcile_once(settings)

    assert report.requeued == ids
    assert sorted(producer.queued_job_ids(settings)) == sorted(
        producer.job_id_for(i, 1) for i in ids
    )
    # A second pass finds nothing to do: the jobs are live now.
    assert reconcile.reconcile_once(settings).requeued == []


def test_a_dead_job_of_a_queued_row_is_replaced(settings: Settings) -> None:
    submission_id = insert_submission(settings)
    producer.enqueue_submission(settings, submission_id)
    # Play a worker that took the job off the queue and then lost it.
    rq_queue = producer.submission_queue(settings, submission_id)
    rq_queue.remove(producer.job_id_for(submission_id, 1))
    assert not producer.job_is_live(settings, submission_id, 1)

    assert reconcile.reconcile_once(settings).requeued == [submission_id]
    assert producer.job_is_live(settings, submission_id, 1)


def test_stale_processing_row_goes_back_with_a_new_attempt(settings: Settings) -> None:
    stale = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s + 5)
    submission_id = insert_submission(
        settings, status=SubmissionStatus.PROCESSING, attempt=1, heartbeat_at=stale, worker_id="w"
    )
    fresh_id = insert_submission(
        settings, status=SubmissionStatus.PROCESSING, attempt=1, heartbeat_at=utcnow()
    )

    report = reconcile.reconcile_once(settings)

    assert report.recovered == [submission_id]
    row = get_submission(settings, submission_id)
    assert (row.status, row.attempt, row.worker_id) == (SubmissionStatus.QUEUED, 2, None)
    assert producer.queued_job_ids(settings) == [producer.job_id_for(submission_id, 2)]
    assert get_submission(settings, fresh_id).status is SubmissionStatus.PROCESSING
    # The presumed-dead worker's late heartbeat no longer touches the row.
    assert not heartbeat.beat(settings, submission_id, 1)


def test_out_of_attempts_ends_failed_as_infrastructure(settings: Settings) -> None:
    stale = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s + 5)
    submission_id = insert_submission(
        settings,
        status=SubmissionStatus.PROCESSING,
        attempt=settings.max_attempts,
        heartbeat_at=stale,
    )
    report = reconcile.reconcile_once(settings)
    assert report.abandoned == [submission_id]
    row = get_submission(settings, submission_id)
    assert row.status is SubmissionStatus.FAILED
    assert row.failure_reason is FailureReason.INFRASTRUCTURE
    assert "not your code's fault" in (row.failure_message or "")
    assert producer.queued_job_ids(settings) == []


def test_only_one_reconciler_holds_the_lock(sqlite_settings: Settings) -> None:
    first = reconcile.Reconciler(sqlite_settings)
    second = reconcile.Reconciler(sqlite_settings)
    assert first._hold_lock()
    assert not second._hold_lock()
    assert first._hold_lock()  # renewing our own hold works


def test_heartbeats_are_judged_only_after_a_full_timeout_of_database_contact(
    sqlite_settings: Settings,
) -> None:
    quick = sqlite_settings.model_copy(update={"heartbeat_timeout_s": 0.3})
    reconciler = reconcile.Reconciler(quick)
    assert not reconciler._may_judge_heartbeats()
    time.sleep(0.35)
    assert reconciler._may_judge_heartbeats()
    reconciler._db_up_since = None  # what a failed database ping does
    assert not reconciler._may_judge_heartbeats()


def test_a_pass_that_may_not_judge_heartbeats_leaves_processing_rows(settings: Settings) -> None:
    stale = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s + 5)
    submission_id = insert_submission(
        settings, status=SubmissionStatus.PROCESSING, heartbeat_at=stale
    )
    assert reconcile.reconcile_once(settings, recover_stale=False).recovered == []
    assert get_submission(settings, submission_id).status is SubmissionStatus.PROCESSING


def test_the_lock_is_free_again_by_the_time_a_heartbeat_goes_stale(settings: Settings) -> None:
    for interval, timeout in ((15, 30), (15, 45), (15, 10), (2, 4), (1, 3)):
        s = settings.model_copy(
            update={"reconcile_interval_s": interval, "heartbeat_timeout_s": timeout}
        )
        ttl = reconcile.Reconciler(s).lock_ttl_s()
        assert ttl > interval  # the holder renews it in time
        assert ttl <= max(timeout, interval + 1)  # a dead holder's lock expires by then


@pytest.mark.timing  # recovery timed against its documented bound
@postgres_only
def test_a_dead_reconcilers_lock_delays_no_recovery(settings: Settings) -> None:
    """The worker killed mid-run may be the one that held the lock: its job must still be back in
    the queue within heartbeat timeout + reconcile interval (the defaults' 2:1 proportions)."""
    s = settings.model_copy(update={"heartbeat_timeout_s": 4.0, "reconcile_interval_s": 2.0})
    submission_id = insert_submission(s, status=SubmissionStatus.PROCESSING, heartbeat_at=utcnow())
    holder, survivor = reconcile.Reconciler(s), reconcile.Reconciler(s)
    holder.start()
    deadline = time.monotonic() + 5
    while redis.Redis.from_url(str(s.redis_url)).get(reconcile.LOCK_KEY) != holder.token.encode():
        assert time.monotonic() < deadline, "the first reconciler never took the lock"
        time.sleep(0.05)
    survivor.start()
    # The holder dies as under SIGKILL: its thread stops, its lock stays behind in Redis.
    died_at = time.monotonic()
    holder._stopping.set()
    holder.join(timeout=10)
    try:
        bound = s.heartbeat_timeout_s + s.reconcile_interval_s
        while get_submission(s, submission_id).status is SubmissionStatus.PROCESSING:
            assert time.monotonic() - died_at < bound + 1.5, "recovery missed its bound"
            time.sleep(0.1)
    finally:
        survivor.stop()
        survivor.join(timeout=10)
    row = get_submission(s, submission_id)
    assert row.status is SubmissionStatus.QUEUED and row.attempt == 2

"""Round-robin across participants: the workers' real dequeue order and the positions shown agree,
and one participant's fifty queued submissions hold back another's single one by one job."""

from __future__ import annotations

from datetime import timedelta

import pytest
from rq import Queue

from edc import db
from edc.config import Settings
from edc.models import Submission, utcnow
from edc.scheduler import fair_worker, producer
from edc.scheduler.position import queue_in_order, queue_position, service_order
from edc.services import accounts
from edc.status import SubmissionStatus
from edc.worker import executor
from tests.support.rows import get_submission


def _users(settings: Settings, *names: str) -> list[int]:
    with db.session_scope(settings) as session:
        return [accounts.create_user(session, name=name).id for name in names]


def _queue_up(settings: Settings, owner: int, count: int, start_s: float) -> list[int]:
    ids = []
    base = utcnow()
    with db.session_scope(settings) as session:
        for n in range(count):
            row = Submission(
                file_path="uploads/x.zip",
                sha256="0" * 64,
                size_bytes=1,
                original_filename="x.zip",
                user_id=owner,
                queued_at=base + timedelta(seconds=start_s + n),
                created_at=base + timedelta(seconds=start_s + n),
                hardware_class="cpu",
            )
            session.add(row)
            session.flush()
            ids.append(row.id)
    for submission_id in ids:
        producer.enqueue_submission(settings, submission_id)
    return ids


def _position(settings: Settings, submission_id: int) -> int | None:
    with db.session_scope(settings) as session:
        row = session.get(Submission, submission_id)
        assert row is not None
        return queue_position(session, row)


def _take_next(settings: Settings, worker: fair_worker.FairWorker) -> int:
    """What a worker does: pop the next job as RQ would, then claim its row."""
    popped = Queue.dequeue_any(worker._ordered_queues, None, connection=worker.connection)
    assert popped is not None
    job, _ = popped
    submission_id = int(job.args[0])
    assert executor.claim(settings, submission_id, attempt=1, worker_id="w")
    return submission_id


def test_a_single_submission_waits_one_job_behind_fifty(settings: Settings) -> None:
    heavy, light = _users(settings, "heavy", "light")
    heavy_ids = _queue_up(settings, heavy, 50, start_s=0)
    (single,) = _queue_up(settings, light, 1, start_s=100)
    # Without the rule it would be 51st.
    assert _position(settings, single) == 2

    worker = fair_worker.make_worker(settings, name="fair-test")
    assert isinstance(worker, fair_worker.FairWorker)
    taken = [_take_next(settings, worker) for _ in range(4)]

    assert taken == [heavy_ids[0], single, heavy_ids[1], heavy_ids[2]]


def test_positions_shown_match_the_order_workers_take(settings: Settings) -> None:
    a, b, c = _users(settings, "ann", "bob", "cat")
    _queue_up(settings, a, 3, start_s=0)
    _queue_up(settings, b, 1, start_s=10)
    _queue_up(settings, c, 2, start_s=20)
    worker = fair_worker.make_worker(settings, name="fair-test")
    for _ in range(6):
        with db.session_scope(settings) as session:
            waiting, total = queue_in_order(session, limit=100)
            listed = [row.id for row in waiting]
            positions = [queue_position(session, row) for row in waiting]
        assert positions == list(range(1, total + 1))
        assert _take_next(settings, worker) == listed[0]


def test_served_participants_go_to_the_back(settings: Settings) -> None:
    a, b = _users(settings, "ann", "bob")
    (first,) = _queue_up(settings, a, 1, start_s=0)
    worker = fair_worker.make_worker(settings, name="fair-test")
    assert _take_next(settings, worker) == first
    # Ann queues again before Bob's first arrives; Bob has never been served, so he goes first.
    (again,) = _queue_up(settings, a, 1, start_s=5)
    (bobs,) = _queue_up(settings, b, 1, start_s=10)
    with db.session_scope(settings) as session:
        assert service_order(session, "cpu") == [b, a]
    assert _position(settings, bobs) == 1
    assert _position(settings, again) == 2
    with db.session_scope(settings) as session:
        row = session.get(Submission, first)
        assert row is not None and row.status is SubmissionStatus.PROCESSING


def test_a_worker_serves_only_its_hardware_class(settings: Settings) -> None:
    (owner,) = _users(settings, "ann")
    cpu_ids = _queue_up(settings, owner, 1, start_s=0)
    gpu_worker = fair_worker.make_worker(settings, name="h100-worker", hardware_class="h100")
    popped = Queue.dequeue_any(gpu_worker._ordered_queues, None, connection=gpu_worker.connection)
    assert popped is None
    cpu_worker = fair_worker.make_worker(settings, name="cpu-worker", hardware_class="cpu")
    assert _take_next(settings, cpu_worker) == cpu_ids[0]


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_attempts": 1})


@pytest.mark.usefixtures("worker_environment")
def test_rq_itself_pops_in_the_service_order(worker_settings: Settings) -> None:
    """The order comes from RQ's private _ordered_queues (rq is pinned for it): a real worker's
    own loop must follow it, not only the tests above that pop through it."""
    s = worker_settings
    alice, bob = _users(s, "alice", "bob")
    alices = _queue_up(s, alice, 3, start_s=0)
    (bobs,) = _queue_up(s, bob, 1, start_s=10)
    worker = fair_worker.make_worker(s, name="w", hardware_class="cpu")
    # Each archive is missing: the job claims its row and fails it, which marks who was served.
    assert worker.work(burst=True, max_jobs=2)
    served = {i for i in [*alices, bobs] if get_submission(s, i).status is SubmissionStatus.FAILED}
    assert served == {alices[0], bobs}

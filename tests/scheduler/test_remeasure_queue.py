"""A re-measurement whose worker died goes back on its queue (real Redis, RQ's own cleanup), and
one that failed can be queued again."""

from __future__ import annotations

import time

from rq import Queue
from rq.job import Job
from rq.registry import StartedJobRegistry

from edc.config import Settings
from edc.scheduler import fair_worker
from edc.scheduler.connection import redis_connection
from edc.scheduler.position import NO_OWNER
from edc.scheduler.producer import queue_name_for
from edc.scheduler.remeasure_queue import RETRIES, enqueue_remeasure


def test_a_remeasurement_whose_worker_died_goes_back_on_the_queue(
    sqlite_settings: Settings,
) -> None:
    s = sqlite_settings
    job_id = enqueue_remeasure(s, 7, 1, hardware_class="cpu")
    connection = redis_connection(s)
    home = Queue(queue_name_for(s, "cpu", NO_OWNER), connection=connection)
    assert home.get_job_ids() == [job_id]

    requeued = 0
    while True:
        # A worker takes it and its work-horse starts it, as RQ's loop does; then both die
        # without a word.
        worker = fair_worker.make_worker(s, name=f"doomed-{requeued}", hardware_class="cpu")
        worker.register_birth()
        popped = worker.dequeue_job_and_maintain_ttl(timeout=1)
        assert popped is not None and popped[0].id == job_id
        worker.prepare_execution(popped[0])
        worker.prepare_job_execution(popped[0])
        assert home.get_job_ids() == []
        # What a live worker's periodic cleanup does once the dead one's entry expires.
        StartedJobRegistry(queue=home).cleanup(timestamp=time.time() + 10**6)
        if home.get_job_ids() != [job_id]:
            break
        requeued += 1
    assert requeued == RETRIES >= 1
    # Out of retries: failed, for the organiser to see; `edc admin rescore` queues it again (RQ
    # keeps a failed job for days and would refuse its id as taken).
    assert Job.fetch(job_id, connection=connection).is_failed
    enqueue_remeasure(s, 7, 1, hardware_class="cpu")
    assert home.get_job_ids() == [job_id]

"""A stale result's re-measurement on the queue: one RQ job per submission, carrying its id and
attempt.

The job goes to the home queue of its class (``queue_name_for(…, NO_OWNER)``), which every
worker of the class serves after the participants' queues: re-measuring old results never
starves new submissions. The job id carries the submission and attempt, so one result has one
live re-measurement at most.
"""

from __future__ import annotations

from contextlib import suppress

from rq import Queue
from rq.exceptions import DuplicateJobError

from edc.config import Settings
from edc.scheduler.connection import redis_connection, redis_errors
from edc.scheduler.position import NO_OWNER
from edc.scheduler.producer import FAILURE_TTL_S, queue_name_for

JOB_FUNCTION = "edc.worker.remeasure.remeasure_result"


def job_id_for(submission_id: int, attempt: int) -> str:
    return f"remeasure-{submission_id}-{attempt}"


def enqueue_remeasure(
    settings: Settings, submission_id: int, attempt: int, *, hardware_class: str
) -> str:
    """Put the re-measurement on its class's home queue; returns the job id (a second call while
    it waits is a no-op)."""
    job_id = job_id_for(submission_id, attempt)
    with redis_errors():
        home = Queue(
            queue_name_for(settings, hardware_class, NO_OWNER),
            connection=redis_connection(settings),
        )
        with suppress(DuplicateJobError):
            home.enqueue_call(
                JOB_FUNCTION,
                args=(submission_id, attempt),
                job_id=job_id,
                timeout=settings.job_timeout_s,
                result_ttl=0,
                failure_ttl=FAILURE_TTL_S,
                description=f"re-measurement of submission {submission_id}",
                unique=True,
            )
    return job_id

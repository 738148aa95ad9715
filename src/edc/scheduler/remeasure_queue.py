"""A stale result's re-measurement on the queue: one RQ job per submission, carrying its id and
attempt.

The job goes to the home queue of its class (``queue_name_for(…, NO_OWNER)``), which every
worker of the class serves after the participants' queues: re-measuring old results never
starves new submissions. The job id carries the submission and attempt, so one result has one
live re-measurement at most.
"""

from __future__ import annotations

from edc.config import Settings
from edc.scheduler.producer import enqueue_on_home

JOB_FUNCTION = "edc.worker.remeasure.remeasure_result"
# A re-measurement changes no row while it runs, so nothing else notices a worker that died
# during it: RQ puts it back on the queue this many times. Storing its result needs the row
# still stale, so a second run after a first that did finish stores nothing.
RETRIES = 2


def job_id_for(submission_id: int, attempt: int) -> str:
    return f"remeasure-{submission_id}-{attempt}"


def enqueue_remeasure(
    settings: Settings, submission_id: int, attempt: int, *, hardware_class: str
) -> str:
    """Put the re-measurement on its class's home queue; returns the job id (a second call while
    it waits or runs is a no-op; one that failed before is replaced)."""
    return enqueue_on_home(
        settings,
        hardware_class,
        JOB_FUNCTION,
        args=(submission_id, attempt),
        job_id=job_id_for(submission_id, attempt),
        timeout=settings.job_timeout_s,
        description=f"re-measurement of submission {submission_id}",
        retries=RETRIES,
        replace_dead=True,
    )

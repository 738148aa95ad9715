"""A final ranking on the queue: one RQ job for the whole final, carrying only its id.

The job goes to the home queue of its hardware class (``queue_name_for(…, NO_OWNER)``), which
every worker of that class serves after the participants' queues: one worker takes it and runs
every measurement of the final itself, on its own cores, in round order. The job id carries the
final's id, so a final never has two live jobs.
"""

from __future__ import annotations

from contextlib import suppress

from rq import Queue
from rq.exceptions import DuplicateJobError

from edc.config import Settings
from edc.scheduler.connection import redis_connection, redis_errors
from edc.scheduler.position import NO_OWNER
from edc.scheduler.producer import FAILURE_TTL_S, live_job_ids, queue_name_for

JOB_FUNCTION = "edc.worker.final_run.run_final"


def job_id_for(final_id: int) -> str:
    return f"final-{final_id}"


def enqueue_final(
    settings: Settings, final_id: int, *, hardware_class: str, measurements: int
) -> str:
    """Put the final on its class's home queue; returns the job id. A second call is a no-op."""
    job_id = job_id_for(final_id)
    with redis_errors():
        home = Queue(
            queue_name_for(settings, hardware_class, NO_OWNER),
            connection=redis_connection(settings),
        )
        with suppress(DuplicateJobError):
            home.enqueue_call(
                JOB_FUNCTION,
                args=(final_id,),
                job_id=job_id,
                # RQ's kill switch: each measurement is one evaluation, bounded like a job.
                timeout=settings.job_timeout_s * max(1, measurements),
                result_ttl=0,
                failure_ttl=FAILURE_TTL_S,
                description=f"final ranking {final_id} ({measurements} measurements)",
                unique=True,
            )
    return job_id


def final_job_is_live(settings: Settings, final_id: int) -> bool:
    """The final's job still waits in a queue or is being worked on."""
    return job_id_for(final_id) in live_job_ids(settings)

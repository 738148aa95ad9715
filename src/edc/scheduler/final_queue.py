"""A final ranking on the queue: one RQ job for the whole final, carrying only its id.

The job goes to the home queue of its hardware class (``queue_name_for(…, NO_OWNER)``), which
every worker of that class serves after the participants' queues: one worker takes it and runs
every measurement of the final itself, on its own cores, in round order. The job id carries the
final's id, so a final never has two live jobs.
"""

from __future__ import annotations

from edc.config import Settings
from edc.scheduler.producer import enqueue_on_home, live_job_ids

JOB_FUNCTION = "edc.worker.final_run.run_final"


def job_id_for(final_id: int) -> str:
    return f"final-{final_id}"


def enqueue_final(
    settings: Settings, final_id: int, *, hardware_class: str, measurements: int
) -> str:
    """Put the final on its class's home queue; returns the job id. A second call is a no-op."""
    return enqueue_on_home(
        settings,
        hardware_class,
        JOB_FUNCTION,
        args=(final_id,),
        job_id=job_id_for(final_id),
        # RQ's kill switch: each measurement is one evaluation, bounded like a job.
        timeout=settings.job_timeout_s * max(1, measurements),
        description=f"final ranking {final_id} ({measurements} measurements)",
    )


def final_job_is_live(settings: Settings, final_id: int) -> bool:
    """The final's job still waits in a queue or is being worked on."""
    return job_id_for(final_id) in live_job_ids(settings)

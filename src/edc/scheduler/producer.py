"""Putting submissions on the queue and taking them off. Redis carries submission ids, nothing else.

The job id is derived from (submission id, attempt), and jobs are enqueued with RQ's atomic
``unique`` check, so one submission never has two live jobs for the same attempt.

Each submission waits in the queue of its hardware class and participant,
``<queue_name>.<class>.u<user id>``; a worker serves one class and takes the heads of those queues
round-robin across participants (:mod:`edc.scheduler.fair_worker`, the rule in
:mod:`edc.scheduler.position`).
"""

from __future__ import annotations

from contextlib import suppress

import redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy import select

from edc import db
from edc.config import Settings
from edc.models import Submission
from edc.scheduler.connection import redis_connection, redis_errors
from edc.scheduler.position import NO_OWNER
from edc.tasks.task import task_hardware_class

# The dotted path RQ stores with every job: a job queued by an earlier release runs by this name,
# so the function must stay importable here (or be aliased) whatever else moves.
JOB_FUNCTION = "edc.worker.executor.process_submission"
# Failed RQ jobs are kept a day for operators; results live in the database, not in Redis.
FAILURE_TTL_S = 24 * 3600


def job_id_for(submission_id: int, attempt: int) -> str:
    return f"submission-{submission_id}-attempt-{attempt}"


def queue_name_for(settings: Settings, hardware_class: str, owner_id: int) -> str:
    return f"{class_prefix(settings, hardware_class)}{owner_id}"


def class_prefix(settings: Settings, hardware_class: str) -> str:
    return f"{settings.queue_name}.{hardware_class}.u"


def owner_of(queue_name: str, prefix: str) -> int | None:
    rest = queue_name.removeprefix(prefix)
    return int(rest) if queue_name.startswith(prefix) and rest.isdigit() else None


def our_queues(
    settings: Settings, connection: redis.Redis, hardware_class: str | None = None
) -> list[Queue]:
    """Every participant queue of the platform (of one class, when given)."""
    prefix = class_prefix(settings, hardware_class) if hardware_class else f"{settings.queue_name}."
    return [q for q in Queue.all(connection=connection) if q.name.startswith(prefix)]


def _route(settings: Settings, submission_id: int) -> tuple[str, int]:
    """The (hardware class, owner) whose queue a submission waits in."""
    with db.session_scope(settings) as session:
        row = session.execute(
            select(Submission.hardware_class, Submission.user_id).where(
                Submission.id == submission_id
            )
        ).first()
    if row is None:  # not (or no longer) in the database: any worker of the task's class
        return task_hardware_class(settings), NO_OWNER
    return row[0], row[1] if row[1] is not None else NO_OWNER


def submission_queue(
    settings: Settings, submission_id: int, route: tuple[str, int | None] | None = None
) -> Queue:
    """The queue the submission's jobs go to; ``route`` (class, owner), when the caller has the
    row at hand, saves reading it again."""
    if route is None:
        hardware_class, owner = _route(settings, submission_id)
    else:
        hardware_class, owner = route[0], route[1] if route[1] is not None else NO_OWNER
    return Queue(
        queue_name_for(settings, hardware_class, owner), connection=redis_connection(settings)
    )


def enqueue_on_home(
    settings: Settings,
    hardware_class: str,
    function: str,
    *,
    args: tuple[int, ...],
    job_id: str,
    timeout: int,
    description: str,
    retries: int = 0,
    replace_dead: bool = False,
) -> str:
    """Put an organisers' job (a final, a re-measurement) on its class's home queue, which every
    worker of the class serves after the participants' queues; returns the job id. A second call
    while it waits is a no-op. With ``retries``, a job whose worker died (or that raised) goes
    back on the queue that many times: RQ's registry cleanup requeues an abandoned job while it
    has retries left. ``replace_dead`` first deletes a finished or failed job of the same id
    (see :func:`_enqueue_once`)."""
    with redis_errors():
        home = Queue(
            queue_name_for(settings, hardware_class, NO_OWNER),
            connection=redis_connection(settings),
        )
        # Its jobs never live on another queue: that one alone says whether the id is live.
        live = _job_ids_on(home) if replace_dead else None
        _enqueue_once(
            home,
            function,
            args=args,
            job_id=job_id,
            timeout=timeout,
            description=description,
            retries=retries,
            replace_if_not_in=live,
        )
    return job_id


def _enqueue_once(
    queue: Queue,
    function: str,
    *,
    args: tuple[int, ...],
    job_id: str,
    timeout: int,
    description: str,
    kwargs: dict[str, int] | None = None,
    retries: int = 0,
    replace_if_not_in: set[str] | None = None,
) -> None:
    """Enqueue ``job_id`` unless a job of that id exists (RQ's ``unique``). Given the live ids,
    an existing job not among them (finished, failed, stopped, or lost from its queue) is
    deleted first: RQ keeps a failed one for days and would refuse the id as taken."""
    if replace_if_not_in is not None and job_id not in replace_if_not_in:
        old = fetch_job(queue.connection, job_id)
        if old is not None:
            old.delete()
    with suppress(DuplicateJobError):
        queue.enqueue_call(
            function,
            args=args,
            kwargs=kwargs,
            job_id=job_id,
            timeout=timeout,
            result_ttl=0,
            failure_ttl=FAILURE_TTL_S,
            description=description,
            unique=True,
            retry=Retry(max=retries) if retries else None,
        )


def fetch_job(connection: redis.Redis, job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=connection)
    except NoSuchJobError:
        return None


def live_job_ids(settings: Settings) -> set[str]:
    """Ids of the jobs RQ will still run by itself: waiting in the queue or being worked on.

    Read from the queue and its registries rather than from job hashes, so a job whose hash
    survived but whose queue entry was lost counts as dead.
    """
    with redis_errors():
        ids: set[str] = set()
        for q in our_queues(settings, redis_connection(settings)):
            ids |= _job_ids_on(q)
        return ids


def _job_ids_on(queue: Queue) -> set[str]:
    """Ids waiting in ``queue`` or being worked on, deferred or scheduled from it."""
    ids = set(queue.get_job_ids())
    for registry in (
        queue.started_job_registry,
        queue.deferred_job_registry,
        queue.scheduled_job_registry,
    ):
        ids.update(registry.get_job_ids())
    return ids


def job_is_live(settings: Settings, submission_id: int, attempt: int) -> bool:
    return job_id_for(submission_id, attempt) in live_job_ids(settings)


def enqueue_submission(
    settings: Settings,
    submission_id: int,
    attempt: int = 1,
    *,
    replace_dead: bool = False,
    route: tuple[str, int | None] | None = None,
) -> str:
    """Put the id on the queue; returns the job id. A second call for a live attempt is a no-op.

    ``replace_dead`` first deletes a finished, failed or stopped job of the same id, so the
    reconciler can give a stranded ``queued`` row a job again. ``route``: the row's (hardware
    class, owner), when the caller has just written it.
    """
    job_id = job_id_for(submission_id, attempt)
    with redis_errors():
        queue = submission_queue(settings, submission_id, route)
        _enqueue_once(
            queue,
            JOB_FUNCTION,
            args=(submission_id,),
            kwargs={"attempt": attempt},
            job_id=job_id,
            timeout=settings.job_timeout_s,
            description=f"evaluate submission {submission_id} (attempt {attempt})",
            # Every queue is read, as the reconciler has always done: live wherever it waits.
            replace_if_not_in=live_job_ids(settings) if replace_dead else None,
        )
    return job_id


def queued_job_ids(settings: Settings) -> list[str]:
    """Every waiting job, queue by queue (each queue first come, first served)."""
    with redis_errors():
        queues = sorted(our_queues(settings, redis_connection(settings)), key=lambda q: q.name)
        return [job_id for q in queues for job_id in q.get_job_ids()]


def remove_queued_job(settings: Settings, submission_id: int, attempt: int) -> bool:
    """Take a waiting job off the queue (a cancelled submission); False when none was waiting."""
    job_id = job_id_for(submission_id, attempt)
    with redis_errors():
        queue = submission_queue(settings, submission_id)
        removed = bool(queue.connection.lrem(queue.key, 0, job_id))
        job = fetch_job(queue.connection, job_id)
        if job is not None and job.get_status(refresh=True) in (
            JobStatus.QUEUED,
            JobStatus.DEFERRED,
            JobStatus.SCHEDULED,
        ):
            job.delete()
        return removed


def submission_of_job(job_id: str) -> tuple[int, int] | None:
    """(submission id, attempt) from a job id made by :func:`job_id_for`."""
    parts = job_id.split("-")
    if len(parts) == 4 and parts[0] == "submission" and parts[2] == "attempt":
        with suppress(ValueError):
            return int(parts[1]), int(parts[3])
    return None

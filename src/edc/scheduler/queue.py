"""The only module that touches RQ. Redis carries submission ids, nothing else.

The job id is derived from (submission id, attempt), and jobs are enqueued with RQ's atomic
``unique`` check, so one submission never has two live jobs for the same attempt.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

import redis
from rq import Queue, Worker
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job

from edc.config import Settings
from edc.errors import ServiceUnavailable

JOB_FUNCTION = "edc.worker.executor.process_submission"
# Failed RQ jobs are kept a day for operators; results live in the database, not in Redis.
FAILURE_TTL_S = 24 * 3600


def job_id_for(submission_id: int, attempt: int) -> str:
    return f"submission-{submission_id}-attempt-{attempt}"


def redis_connection(settings: Settings) -> redis.Redis:
    if not settings.redis_url:
        raise ServiceUnavailable(
            "No Redis is configured: set EDC_REDIS_URL, or start everything with `edc up`, "
            "which runs an embedded Redis."
        )
    return redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30
    )


@contextmanager
def redis_errors() -> Iterator[None]:
    """Translate redis-py's errors into the project's own where they enter."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise ServiceUnavailable(f"The job queue (Redis) is unreachable: {exc}") from exc


def submission_queue(settings: Settings, connection: redis.Redis | None = None) -> Queue:
    return Queue(settings.queue_name, connection=connection or redis_connection(settings))


def _fetch_job(connection: redis.Redis, job_id: str) -> Job | None:
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
        q = submission_queue(settings)
        ids = set(q.get_job_ids())
        for registry in (q.started_job_registry, q.deferred_job_registry, q.scheduled_job_registry):
            ids.update(registry.get_job_ids())
        return ids


def job_is_live(settings: Settings, submission_id: int, attempt: int) -> bool:
    return job_id_for(submission_id, attempt) in live_job_ids(settings)


def enqueue_submission(
    settings: Settings, submission_id: int, attempt: int = 1, *, replace_dead: bool = False
) -> str:
    """Put the id on the queue; returns the job id. A second call for a live attempt is a no-op.

    ``replace_dead`` first deletes a finished, failed or stopped job of the same id, so the
    reconciler can give a stranded ``queued`` row a job again.
    """
    job_id = job_id_for(submission_id, attempt)
    with redis_errors():
        queue = submission_queue(settings)
        if replace_dead and job_id not in live_job_ids(settings):
            old = _fetch_job(queue.connection, job_id)
            if old is not None:
                old.delete()
        with suppress(DuplicateJobError):
            queue.enqueue_call(
                JOB_FUNCTION,
                args=(submission_id,),
                kwargs={"attempt": attempt},
                job_id=job_id,
                timeout=settings.job_timeout_s,
                result_ttl=0,
                failure_ttl=FAILURE_TTL_S,
                description=f"evaluate submission {submission_id} (attempt {attempt})",
                unique=True,
            )
    return job_id


def ping(settings: Settings) -> None:
    with redis_errors():
        redis_connection(settings).ping()


def queued_job_ids(settings: Settings) -> list[str]:
    with redis_errors():
        return list(submission_queue(settings).get_job_ids())


def make_worker(settings: Settings, *, name: str | None = None) -> Worker:
    connection = redis_connection(settings)
    return Worker([submission_queue(settings, connection)], connection=connection, name=name)

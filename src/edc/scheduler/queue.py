"""The only module that touches RQ. Redis carries submission ids, nothing else.

The job id is derived from (submission id, attempt), and jobs are enqueued with RQ's atomic
``unique`` check, so one submission never has two live jobs for the same attempt.

Each submission waits in the queue of its hardware class and participant,
``<queue_name>.<class>.u<user id>``; a worker serves one class and takes the heads of those queues
round-robin across participants (the rule lives in :mod:`edc.queue_position`).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import redis
from rq import Queue, Worker
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy import select

from edc import db
from edc.config import Settings
from edc.errors import ServiceUnavailable
from edc.models import Submission
from edc.queue_position import NO_OWNER, service_order

JOB_FUNCTION = "edc.worker.executor.process_submission"
# Failed RQ jobs are kept a day for operators; results live in the database, not in Redis.
FAILURE_TTL_S = 24 * 3600


def job_id_for(submission_id: int, attempt: int) -> str:
    return f"submission-{submission_id}-attempt-{attempt}"


# One client (and its connection pool) per (URL, process): a pool per call would leave sockets
# open until the garbage collector finds them, and a forked work-horse must not share sockets.
_clients: dict[tuple[str, int], redis.Redis] = {}


def redis_connection(settings: Settings) -> redis.Redis:
    if not settings.redis_url:
        raise ServiceUnavailable(
            "No Redis is configured: set EDC_REDIS_URL, or start everything with `edc up`, "
            "which runs an embedded Redis."
        )
    key = (settings.redis_url, os.getpid())
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=5,
            socket_timeout=30,
            health_check_interval=30,
        )
    return client


@contextmanager
def redis_errors() -> Iterator[None]:
    """Translate redis-py's errors into the project's own where they enter."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise ServiceUnavailable(f"The job queue (Redis) is unreachable: {exc}") from exc


def queue_name_for(settings: Settings, hardware_class: str, owner_id: int) -> str:
    return f"{class_prefix(settings, hardware_class)}{owner_id}"


def class_prefix(settings: Settings, hardware_class: str) -> str:
    return f"{settings.queue_name}.{hardware_class}.u"


def _owner_of(queue_name: str, prefix: str) -> int | None:
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
        return submissions_class(settings), NO_OWNER
    return row[0], row[1] if row[1] is not None else NO_OWNER


def submission_queue(settings: Settings, submission_id: int) -> Queue:
    """The queue the submission's jobs go to."""
    hardware_class, owner = _route(settings, submission_id)
    return Queue(
        queue_name_for(settings, hardware_class, owner), connection=redis_connection(settings)
    )


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
        ids: set[str] = set()
        for q in our_queues(settings, redis_connection(settings)):
            ids.update(q.get_job_ids())
            for registry in (
                q.started_job_registry,
                q.deferred_job_registry,
                q.scheduled_job_registry,
            ):
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
        queue = submission_queue(settings, submission_id)
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
    """Every waiting job, queue by queue (each queue first come, first served)."""
    with redis_errors():
        queues = sorted(our_queues(settings, redis_connection(settings)), key=lambda q: q.name)
        return [job_id for q in queues for job_id in q.get_job_ids()]


class HandBackWorker(Worker):
    """An RQ worker whose warm shutdown (SIGTERM) asks the running job to hand its submission
    back to the queue, instead of finishing an evaluation that may last minutes."""

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]
        if self.horse_pid:
            with suppress(ProcessLookupError):
                os.kill(self.horse_pid, signal.SIGTERM)


class Watch(Protocol):
    """A check a worker runs between jobs that can bar it from taking any (the drift watch)."""

    drifting: bool

    def due(self) -> bool: ...

    def overdue(self) -> bool: ...

    def check(self) -> object: ...


def _profile_key(settings: Settings) -> str:
    return f"edc:{settings.deployment_id}:worker-profiles"


def announce_worker(settings: Settings, name: str, *, hardware_class: str, host: str) -> None:
    """Record what a worker is (class, devices, host) for the admins' list of workers."""
    profile = {"hardware_class": hardware_class, "gpus": list(settings.gpu_ids), "host": host}
    with redis_errors():
        redis_connection(settings).hset(_profile_key(settings), name, json.dumps(profile))


def retire_worker(settings: Settings, name: str) -> None:
    with redis_errors():
        redis_connection(settings).hdel(_profile_key(settings), name)


def drifting_key(settings: Settings) -> str:
    """The Redis set of workers barred by the drift watch."""
    return f"edc:{settings.deployment_id}:drifting"


class FairWorker(HandBackWorker):
    """Serves one hardware class, taking participants' queues round-robin.

    RQ pops from the first non-empty queue of the list it is given, so the list is rebuilt
    before every pop in the order of :func:`edc.queue_position.service_order`, and the blocking
    pop is kept short so a new participant's queue joins within seconds.
    """

    POLL_S = 2

    def __init__(
        self, settings: Settings, hardware_class: str, connection: redis.Redis, name: str | None
    ) -> None:
        self.settings = settings
        self.hardware_class = hardware_class
        self.prefix = class_prefix(settings, hardware_class)
        home = Queue(queue_name_for(settings, hardware_class, NO_OWNER), connection=connection)
        super().__init__([home], connection=connection, name=name)
        self._home = home
        # Never fed: what a barred worker listens on, so it takes no job but stays registered.
        self._parked = Queue(f"{self.prefix}parked", connection=connection)
        self.watch: Watch | None = None

    @property
    def dequeue_timeout(self) -> int:
        return self.POLL_S

    @property
    def _ordered_queues(self) -> list[Queue]:
        ordered = self._queues_in_service_order()
        if self.watch is not None:
            # Only between jobs (this runs before a pop, never during a job) and, unless long
            # overdue, only when nothing waits: calibration never delays or overlaps a timed run.
            if self.watch.due() and (self.watch.overdue() or not any(q.count for q in ordered)):
                self.watch.check()
            if self.watch.drifting:
                return [self._parked]
        return ordered

    @_ordered_queues.setter
    def _ordered_queues(self, _value: list[Queue]) -> None:
        pass  # RQ's own reordering is replaced by the getter's rule

    def _queues_in_service_order(self) -> list[Queue]:
        queues = {}
        for q in our_queues(self.settings, self.connection, self.hardware_class):
            owner = _owner_of(q.name, self.prefix)
            if owner is not None:
                queues[owner] = q
        with db.session_scope(self.settings) as session:
            order = service_order(session, self.hardware_class)
        ordered = [queues.pop(owner) for owner in order if owner in queues]
        # Queues the database knows nothing waiting in (stale jobs) come last; the home queue
        # is always listed, so there is something to block on.
        queues.setdefault(NO_OWNER, self._home)
        return ordered + [queues[owner] for owner in sorted(queues)]


def make_worker(
    settings: Settings, *, name: str | None = None, hardware_class: str | None = None
) -> FairWorker:
    """A worker for ``hardware_class`` (default: the class of the competition's task)."""
    return FairWorker(
        settings,
        hardware_class or submissions_class(settings),
        redis_connection(settings),
        name,
    )


def submissions_class(settings: Settings) -> str:
    """The hardware class new submissions get: the task's."""
    from edc.harness.evaluate import load_task

    return load_task(settings).spec.hardware.kind


def remove_queued_job(settings: Settings, submission_id: int, attempt: int) -> bool:
    """Take a waiting job off the queue (a cancelled submission); False when none was waiting."""
    job_id = job_id_for(submission_id, attempt)
    with redis_errors():
        queue = submission_queue(settings, submission_id)
        removed = bool(queue.connection.lrem(queue.key, 0, job_id))
        job = _fetch_job(queue.connection, job_id)
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


@dataclass(frozen=True)
class WorkerState:
    """One RQ worker as its registry in Redis describes it."""

    name: str
    state: str  # "idle", "busy", "suspended", ...
    alive: bool  # heartbeat seen within the liveness window
    submission_id: int | None  # what it works on, when busy with a submission
    attempt: int | None
    busy_since: datetime | None  # when the current job started
    last_heartbeat: datetime | None
    started_at: datetime | None  # when the worker process registered
    drifting: bool = False  # barred by the drift watch: its baseline timing is off the fleet's
    hardware_class: str | None = None  # what the worker announced at start (announce_worker)
    gpus: tuple[str, ...] = ()
    host: str | None = None


# RQ workers beat every few seconds while idle or busy; well past that they are gone or stuck.
WORKER_ALIVE_S = 60.0


def worker_states(settings: Settings) -> list[WorkerState]:
    """The workers registered on this platform's queue, busiest first."""
    with redis_errors():
        connection = redis_connection(settings)
        ours = f"{settings.queue_name}."
        workers = [
            w
            for w in Worker.all(connection=connection)
            if any(name.startswith(ours) for name in w.queue_names())
        ]
        now = datetime.now(UTC)
        drifting = {_text(name) for name in connection.smembers(drifting_key(settings))}
        profiles = {
            _text(name): json.loads(raw)
            for name, raw in connection.hgetall(_profile_key(settings)).items()
        }
        states = []
        for worker in workers:
            job_id = worker.get_current_job_id()
            owner = submission_of_job(job_id) if job_id else None
            busy_since = None
            if job_id:
                job = _fetch_job(connection, job_id)
                if job is not None and job.started_at is not None:
                    busy_since = _utc(job.started_at)
            heartbeat = _utc(worker.last_heartbeat) if worker.last_heartbeat else None
            states.append(
                WorkerState(
                    name=worker.name,
                    state=str(worker.get_state()),
                    alive=heartbeat is not None
                    and (now - heartbeat).total_seconds() < WORKER_ALIVE_S,
                    submission_id=owner[0] if owner else None,
                    attempt=owner[1] if owner else None,
                    busy_since=busy_since,
                    last_heartbeat=heartbeat,
                    started_at=_utc(worker.birth_date) if worker.birth_date else None,
                    drifting=worker.name in drifting,
                    hardware_class=profiles.get(worker.name, {}).get("hardware_class"),
                    gpus=tuple(profiles.get(worker.name, {}).get("gpus", ())),
                    host=profiles.get(worker.name, {}).get("host"),
                )
            )
    return sorted(states, key=lambda s: (s.submission_id is None, s.name))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _utc(moment: datetime) -> datetime:
    # RQ stores naive UTC times.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment

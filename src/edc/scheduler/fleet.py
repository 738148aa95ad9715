"""The fleet of workers as Redis knows it: what each announced at start, which are barred by the
drift watch, and what each is busy with, for the admins' page and the metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from rq import Worker

from edc.config import Settings
from edc.scheduler.connection import redis_connection, redis_errors
from edc.scheduler.producer import fetch_job, submission_of_job


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
                job = fetch_job(connection, job_id)
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

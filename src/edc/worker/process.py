"""A worker process from start to stop: prove the sandbox, own the cores, warm up, announce itself,
then take jobs until told to stop.

Start-up checks raise :class:`~edc.errors.EdcError` before the worker takes any job (the command
line says "Refusing to start"); what stops a serving worker is raised from :func:`serve`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import uuid
from dataclasses import dataclass

from edc import db
from edc.config import Settings
from edc.errors import EdcError
from edc.observability.logging import log_context
from edc.sandbox.backends import choose_sandbox
from edc.sandbox.cpus import check_enough, worker_cpus
from edc.scheduler.fair_worker import make_worker
from edc.scheduler.fleet import announce_worker, retire_worker
from edc.scheduler.reconcile import Reconciler
from edc.tasks.pool import hidden_pool
from edc.tasks.task import load_task, worker_class
from edc.worker import canary, provenance
from edc.worker import executor as _job  # noqa: F401  (loaded once here, not in each job)
from edc.worker.drift import DriftWatch

log = logging.getLogger("edc.worker")


@dataclass(frozen=True)
class ReadyWorker:
    """A worker that passed its start-up checks and announced itself, not yet taking jobs."""

    settings: Settings
    name: str
    hardware_class: str
    watch: DriftWatch | None


def prepare(settings: Settings, *, name_suffix: str | None = None) -> ReadyWorker:
    """Every check a worker passes before its first job; raises EdcError on the first that fails."""
    cpus = worker_cpus(settings)
    task = load_task(settings)
    sandbox = choose_sandbox(settings, task.runtime)
    # The slot is stable across restarts, so a restarted worker finds the sandboxes its killed
    # predecessor left (and only those: the deployment part keeps apart several platforms on one
    # host); the random part keeps RQ from refusing a name still registered.
    slot = settings.worker_id or (
        f"{socket.gethostname()}-{name_suffix or 'w'}-{settings.deployment_id}"
    )
    name = f"{slot}-{uuid.uuid4().hex[:6]}"
    removed = sandbox.remove_leftovers({"slot": slot})
    log.info(
        "worker %s: sandbox %s (%s); removed %d leftover sandboxes",
        name,
        sandbox.name,
        sandbox.describe_isolation(),
        removed,
    )
    log.info("worker %s: %s", name, cpus.describe())
    canary.check_in_child()  # nothing of the platform may be visible inside its sandboxes
    check_enough(cpus.owned, task.limits.cpus)
    provenance.warm(settings, task)
    # Seeded (once per platform) before the first job, not in the middle of one.
    db.retry_while_unreachable(
        settings, lambda: hidden_pool(settings, task), what="preparing the hidden prompt pool"
    )
    hardware_class = worker_class(settings, task)
    watch = DriftWatch(settings, name, hardware_class) if settings.drift_watch else None
    announce_worker(settings, name, hardware_class=hardware_class, host=socket.gethostname())
    return ReadyWorker(settings=settings, name=name, hardware_class=hardware_class, watch=watch)


def serve(ready: ReadyWorker, *, burst: bool = False) -> None:
    """Take jobs, with the reconciler beside, until stopped (with ``burst``: until none wait)."""
    settings = ready.settings
    reconciler = Reconciler(settings)
    reconciler.start()
    try:
        rq_worker = make_worker(settings, name=ready.name, hardware_class=ready.hardware_class)
        rq_worker.watch = ready.watch
        # The forked work-horses inherit the context: every line carries the worker's name.
        with log_context(worker_id=ready.name):
            rq_worker.work(burst=burst, with_scheduler=False)
    finally:
        reconciler.stop()
        with contextlib.suppress(EdcError):
            retire_worker(settings, ready.name)
            if ready.watch is not None:
                ready.watch.forget()

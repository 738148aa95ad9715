"""The worker process's RQ side: one hardware class, participants' queues taken round-robin, and a
warm shutdown that hands the running submission back. Every worker also delivers notifications
(:mod:`edc.scheduler.notify_queue`), ahead of any evaluation."""

from __future__ import annotations

import os
import signal
from contextlib import suppress
from typing import Protocol

import redis
from rq import Queue, Worker

from edc import db
from edc.config import Settings
from edc.scheduler.connection import redis_connection
from edc.scheduler.notify_queue import notification_queue
from edc.scheduler.position import NO_OWNER, service_order
from edc.scheduler.producer import class_prefix, our_queues, owner_of, queue_name_for
from edc.tasks.task import task_hardware_class


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

    @property
    def drifting(self) -> bool: ...

    def due(self) -> bool: ...

    def overdue(self) -> bool: ...

    def check(self) -> object: ...


class FairWorker(HandBackWorker):
    """Serves one hardware class, taking participants' queues round-robin.

    RQ pops from the first non-empty queue of the list it is given, so the list is rebuilt
    before every pop in the order of :func:`edc.scheduler.position.service_order`, and the blocking
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
        # Listed for RQ's upkeep (its registries are cleaned like the home queue's).
        self._notifications = notification_queue(settings, connection)
        super().__init__([home, self._notifications], connection=connection, name=name)
        self._home = home
        # Never fed: what a barred worker listens on, so it takes no job but stays registered.
        self._parked = Queue(f"{self.prefix}parked", connection=connection)
        self.watch: Watch | None = None

    @property
    def dequeue_timeout(self) -> int:
        return self.POLL_S

    # RQ's private hook for the queues a pop looks at, in order. It is private, so RQ is pinned
    # (pyproject.toml) and tests/scheduler/test_fair_queue.py fails where a release renames or
    # stops reading it; re-read rq/worker.py before moving the pin.
    @property
    def _ordered_queues(self) -> list[Queue]:
        ordered = self._queues_in_service_order()
        if self.watch is not None:
            # Only between jobs (this runs before a pop, never during a job) and, unless long
            # overdue, only when nothing waits: calibration never delays or overlaps a timed run.
            if self.watch.due() and (self.watch.overdue() or not any(q.count for q in ordered)):
                self.watch.check()
            if self.watch.drifting:
                # A delivery measures nothing: a barred worker still makes them.
                return [self._notifications, self._parked]
        # First: a delivery takes seconds, and must not wait for hours of evaluations.
        return [self._notifications, *ordered]

    @_ordered_queues.setter
    def _ordered_queues(self, _value: list[Queue]) -> None:
        pass  # RQ's own reordering is replaced by the getter's rule

    def _queues_in_service_order(self) -> list[Queue]:
        queues = {}
        for q in our_queues(self.settings, self.connection, self.hardware_class):
            owner = owner_of(q.name, self.prefix)
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
        hardware_class or task_hardware_class(settings),
        redis_connection(settings),
        name,
    )

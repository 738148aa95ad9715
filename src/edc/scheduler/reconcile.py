"""Rebuilding the queue from the database, the truth.

Redis may lose what it carried (a restart, a flush) and a worker may die mid-run (SIGKILL, a lost
host); RQ alone leaves such jobs "started" forever. The reconciler repairs both from the rows:

- a ``queued`` row whose job (for its attempt) no queue holds alive is enqueued again;
- a ``processing`` row whose heartbeat went stale goes back to ``queued`` with attempt + 1, or
  ends ``failed`` (reason ``infrastructure``) once it has used ``max_attempts``.

Any number of workers run a reconciler thread; a Redis lock makes exactly one of them act.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import redis
from sqlalchemy import or_, select, update
from sqlalchemy.exc import InterfaceError, OperationalError

from edc import db
from edc.config import Settings
from edc.errors import EdcError
from edc.models import Submission, running_attempt, utcnow
from edc.scheduler import connection as redis_link
from edc.scheduler import producer
from edc.status import FailureReason, SubmissionStatus

log = logging.getLogger(__name__)

LOCK_KEY = "edc:reconciler:lock"


@dataclass
class ReconcileReport:
    requeued: list[int] = field(default_factory=list)  # queued rows given a job again
    recovered: list[int] = field(default_factory=list)  # stale processing rows sent back
    abandoned: list[int] = field(default_factory=list)  # stale rows out of attempts: failed


def _recover_stale(settings: Settings, report: ReconcileReport) -> None:
    cutoff = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s)
    with db.session_scope(settings) as session:
        stale = session.execute(
            select(Submission.id, Submission.attempt).where(
                Submission.status == SubmissionStatus.PROCESSING,
                or_(
                    Submission.heartbeat_at < cutoff,
                    Submission.heartbeat_at.is_(None) & (Submission.started_at < cutoff),
                ),
            )
        ).all()
    for submission_id, attempt in stale:
        out_of_attempts = attempt >= settings.max_attempts
        values: dict[str, object] = (
            {
                "status": SubmissionStatus.FAILED,
                "failure_reason": FailureReason.INFRASTRUCTURE,
                "failure_message": (
                    f"The worker evaluating this submission stopped responding "
                    f"{attempt} times; the platform gave up. It was not your code's fault."
                ),
                "finished_at": utcnow(),
            }
            if out_of_attempts
            else {
                "status": SubmissionStatus.QUEUED,
                "attempt": attempt + 1,
                "worker_id": None,
                "started_at": None,
                "heartbeat_at": None,
            }
        )
        with db.session_scope(settings) as session:
            changed = session.execute(
                update(Submission)
                .where(running_attempt(submission_id, attempt))
                .values(**values)
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
        if changed != 1:
            continue  # the worker finished after all, or someone else moved it
        if out_of_attempts:
            log.warning("submission %s: worker lost %d times; failed", submission_id, attempt)
            report.abandoned.append(submission_id)
        else:
            log.warning("submission %s: worker lost; attempt %d queued", submission_id, attempt + 1)
            producer.enqueue_submission(settings, submission_id, attempt + 1)
            report.recovered.append(submission_id)


def _requeue_orphans(settings: Settings, report: ReconcileReport) -> None:
    with db.session_scope(settings) as session:
        queued = session.execute(
            select(Submission.id, Submission.attempt)
            .where(Submission.status == SubmissionStatus.QUEUED)
            .order_by(Submission.id)
        ).all()
    live = producer.live_job_ids(settings) if queued else set()
    for submission_id, attempt in queued:
        if producer.job_id_for(submission_id, attempt) not in live:
            producer.enqueue_submission(settings, submission_id, attempt, replace_dead=True)
            report.requeued.append(submission_id)


def reconcile_once(settings: Settings, *, recover_stale: bool = True) -> ReconcileReport:
    """One pass over the database; safe to run concurrently (updates are conditional)."""
    report = ReconcileReport()
    if recover_stale:
        _recover_stale(settings, report)
    _requeue_orphans(settings, report)
    if report.requeued or report.recovered or report.abandoned:
        log.info(
            "reconciled: requeued %s, recovered %s, abandoned %s",
            report.requeued,
            report.recovered,
            report.abandoned,
        )
    return report


class Reconciler(threading.Thread):
    """Runs :func:`reconcile_once` every interval while it holds the cluster-wide lock."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="edc-reconciler", daemon=True)
        self.settings = settings
        self.token = uuid.uuid4().hex
        self._stopping = threading.Event()
        # Since when this process has seen the database answer without a break. Workers cannot
        # beat while the database is down, so heartbeats are judged only after a full timeout
        # of continuous contact: a database restart must not make live workers look dead.
        self._db_up_since: float | None = None

    def _may_judge_heartbeats(self) -> bool:
        now = time.monotonic()
        if self._db_up_since is None:
            self._db_up_since = now
        return now - self._db_up_since >= self.settings.heartbeat_timeout_s

    def lock_ttl_s(self) -> int:
        """How long the lock outlives its holder's last pass. A holder renews it every interval,
        so it must outlast one; and a dead holder's lock must be free again by the time a dead
        worker's heartbeat goes stale, so that the job is back in the queue within
        ``heartbeat_timeout_s + reconcile_interval_s`` of the death, whoever held the lock."""
        s = self.settings
        return math.ceil(
            max(s.reconcile_interval_s + 1, min(2 * s.reconcile_interval_s, s.heartbeat_timeout_s))
        )

    def _hold_lock(self) -> bool:
        """Take the lock or extend our hold; False while another process holds it."""
        connection = redis_link.redis_connection(self.settings)
        ttl = self.lock_ttl_s()
        if connection.set(LOCK_KEY, self.token, nx=True, ex=ttl):
            return True
        if connection.get(LOCK_KEY) == self.token.encode():
            connection.expire(LOCK_KEY, ttl)
            return True
        return False

    def run(self) -> None:
        while not self._stopping.is_set():
            # Passes start an interval apart, however long each takes: waiting a whole interval
            # after each would add a pass's duration to every period, and to the recovery bound.
            started = time.monotonic()
            try:
                # Every pass, lock or not: contact with the database is what lets heartbeats be
                # judged, and a reconciler taking over a dead holder's lock must be ready to.
                db.ping(self.settings)
                may_judge = self._may_judge_heartbeats()
                with redis_link.redis_errors():
                    if self._hold_lock():
                        reconcile_once(self.settings, recover_stale=may_judge)
            except (OperationalError, InterfaceError) as exc:
                self._db_up_since = None
                log.warning("reconciler: database unreachable: %s", exc)
            except EdcError as exc:
                log.warning("reconciler: %s", exc.message)
            except Exception:
                log.exception("reconciler pass failed; will try again")
            elapsed = time.monotonic() - started
            self._stopping.wait(max(0.0, self.settings.reconcile_interval_s - elapsed))

    def stop(self) -> None:
        self._stopping.set()
        # Hand the lock on at once rather than make the others wait out its TTL.
        with contextlib.suppress(redis.exceptions.RedisError, EdcError):
            connection = redis_link.redis_connection(self.settings)
            if connection.get(LOCK_KEY) == self.token.encode():
                connection.delete(LOCK_KEY)

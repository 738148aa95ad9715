"""The worker's one job: claim a submission, run it sandboxed, store what happened.

The row moves ``queued → processing`` only through an atomic conditional UPDATE, so a duplicate
delivery of the same job does nothing. Every way out of :func:`run_submission` ends with the row
``completed`` or ``failed`` (with a reason and a sentence), or handed back to the queue for an
infrastructure retry: never stuck in ``processing``.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import socket
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import update

from edc import archive, db
from edc.config import Settings, get_settings
from edc.errors import ArchiveUnavailable, InvalidUpload, RunFailed, SandboxUnavailable
from edc.lifetime import die_with_parent
from edc.models import Submission, running_attempt, utcnow
from edc.observability.logging import log_context
from edc.observability.prometheus import record_outcome
from edc.scheduler import producer
from edc.services import notifications
from edc.status import FailureReason, ReviewState, SubmissionStatus
from edc.worker.archive_source import fetch_archive
from edc.worker.evaluation import Evaluation, StageFailed, evaluate, submission_track
from edc.worker.heartbeat import Heartbeat

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What one evaluation produced, ready to be written on the row."""

    status: SubmissionStatus
    metrics: dict[str, Any] | None
    logs: str  # for admins
    reason: FailureReason | None = None
    message: str | None = None
    public_logs: str = ""  # for the participant
    # For organisers only (``submissions.audit``): what replays the hidden evaluation.
    audit: dict[str, Any] | None = None

    @property
    def review(self) -> ReviewState | None:
        """Flagged when the harness found the result faster than the task's physical floor:
        it stays ranked, marked, until an organiser clears it or disqualifies the submission."""
        plausibility = (self.metrics or {}).get("plausibility")
        if isinstance(plausibility, dict) and plausibility.get("implausible") is True:
            return ReviewState.FLAGGED
        return None


def completed(evaluation: Evaluation) -> Outcome:
    """The outcome of an evaluation that ran to the end."""
    return Outcome(
        SubmissionStatus.COMPLETED,
        finite_json(evaluation.metrics),
        evaluation.logs,
        public_logs=evaluation.public_logs,
        audit=finite_json(evaluation.audit) or None,
    )


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-local"


def worker_slot(worker_id: str) -> str:
    """The stable part of a worker's name (`edc worker` appends a random part to the slot)."""
    return worker_id.rsplit("-", 1)[0]


class WorkerStopping(BaseException):
    """The worker is shutting down: hand the submission back rather than finish it.

    A BaseException, so no ``except Exception`` on the way up mistakes it for a failure;
    ``finally`` blocks still run and stop the sandbox.
    """


def _stop_on_sigterm(_signum: int, _frame: object) -> None:
    raise WorkerStopping


class SubmissionLost(BaseException):
    """The row stopped being ours mid-run (cancelled, or handed to another worker)."""


# The heartbeat thread signals the main thread with this, whose handler raises SubmissionLost:
# a thread cannot raise in another, and the run blocks the main thread.
LOST_SIGNAL = signal.SIGUSR1


def _lost(_signum: int, _frame: object) -> None:
    raise SubmissionLost


def _stopper() -> Callable[[], None] | None:
    """What the heartbeat calls to stop the run, where signals can reach the running thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    signal.signal(LOST_SIGNAL, _lost)
    resignal_when_swallowed()
    return lambda: os.kill(os.getpid(), LOST_SIGNAL)


# The signal that raises each stop, to send again when Python swallowed the raise.
_STOP_SIGNALS: dict[type[BaseException], signal.Signals] = {
    WorkerStopping: signal.SIGTERM,
    SubmissionLost: LOST_SIGNAL,
}


RESIGNAL_AFTER_S = 0.05


def resignal_when_swallowed() -> None:
    """A handler that raises can run inside a weakref callback, a ``__del__`` or a garbage
    collection, where Python prints "Exception ignored" and goes on: the stop would be lost and
    the run finished regardless. Python hands such an exception to ``sys.unraisablehook``; this
    hook sends its signal again a moment later (sent now, the handler would run inside the hook
    and be ignored again), so the raise happens anew outside."""
    previous = sys.unraisablehook
    if getattr(previous, "resignals_stops", False):
        return

    def hook(unraisable: Any) -> None:
        for kind, signum in _STOP_SIGNALS.items():
            if isinstance(unraisable.exc_value, kind):
                log.info("%s raised where Python ignores it; signalling again", kind.__name__)
                threading.Timer(RESIGNAL_AFTER_S, os.kill, (os.getpid(), signum)).start()
                return
        previous(unraisable)

    hook.resignals_stops = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def process_submission(submission_id: int, attempt: int | None = None) -> None:
    """RQ entry point: only the id travels through Redis; everything else is read from the DB."""
    settings, worker_id = work_horse_context()
    run_submission(settings, submission_id, attempt=attempt, worker_id=worker_id)


def work_horse_context() -> tuple[Settings, str]:
    """Ready a job's process (a submission's, a final's): inside RQ's work-horse it dies with its
    worker and stops cleanly on the worker's SIGTERM. Returns the settings and the worker's id."""
    from rq import get_current_job  # only meaningful inside an RQ work-horse

    job = get_current_job()
    if job is not None:
        # RQ's work-horse otherwise outlives a SIGKILLed worker and runs its job unseen
        # (rq/rq#646); dying with it lets the reconciler hand the job to a live worker.
        # The sandbox, started die-with-parent, goes down with the horse.
        die_with_parent(signal.SIGKILL)
        # The worker forwards its SIGTERM here (see fair_worker.HandBackWorker).
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        resignal_when_swallowed()
    settings = get_settings()
    worker_id = settings.worker_id or (job.worker_name if job else None) or default_worker_id()
    return settings, worker_id


def claim(settings: Settings, submission_id: int, *, attempt: int | None, worker_id: str) -> bool:
    """Atomically move a queued row to processing; False when someone else has it (or nobody)."""
    conditions = [Submission.id == submission_id, Submission.status == SubmissionStatus.QUEUED]
    if attempt is not None:
        conditions.append(Submission.attempt == attempt)
    with db.session_scope(settings) as session:
        result = session.execute(
            update(Submission)
            .where(*conditions)
            .values(
                status=SubmissionStatus.PROCESSING,
                started_at=utcnow(),
                heartbeat_at=utcnow(),
                finished_at=None,
                worker_id=worker_id,
            )
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def run_submission(
    settings: Settings, submission_id: int, *, attempt: int | None, worker_id: str
) -> Outcome | None:
    """Claim, evaluate and record one submission. Returns None when the claim was lost."""
    with log_context(submission_id=submission_id, worker_id=worker_id, attempt=attempt):
        return _run_submission(settings, submission_id, attempt=attempt, worker_id=worker_id)


def _run_submission(
    settings: Settings, submission_id: int, *, attempt: int | None, worker_id: str
) -> Outcome | None:
    if not claim(settings, submission_id, attempt=attempt, worker_id=worker_id):
        log.info(
            "submission %s attempt %s: not queued for us; nothing to do", submission_id, attempt
        )
        return None

    def read_claimed() -> tuple[str, str, int]:
        with db.session_scope(settings) as session:
            row = session.get(Submission, submission_id)
            assert row is not None
            return row.file_path, row.sha256, row.attempt

    # Read again while the database does not answer: an outage just after the claim must not
    # cost the submission an attempt.
    file_path, sha256, current_attempt = db.retry_while_unreachable(
        settings, read_claimed, what=f"reading claimed submission {submission_id}"
    )
    run_dir = settings.runs_dir / f"{submission_id}-{current_attempt}-{uuid.uuid4().hex[:8]}"
    try:
        with Heartbeat.for_submission(settings, submission_id, current_attempt, on_lost=_stopper()):
            outcome = evaluate_archive(
                settings,
                submission_id=submission_id,
                file_path=file_path,
                sha256=sha256,
                run_dir=run_dir,
                worker_id=worker_id,
            )
    except SubmissionLost:
        # Cancelled, or already recovered elsewhere: the sandbox is stopped; nothing to store.
        log.info("submission %s: run stopped, the row is no longer ours", submission_id)
        return None
    except WorkerStopping:
        log.info("submission %s: worker stopping; handing it back", submission_id)
        stopped = Outcome(
            SubmissionStatus.QUEUED,
            None,
            "",
            FailureReason.INFRASTRUCTURE,
            "The worker was shut down during the evaluation; it was handed back to the queue.",
        )
        db.retry_while_unreachable(
            settings,
            lambda: _hand_back(settings, submission_id, current_attempt, stopped),
            what=f"handing back submission {submission_id}",
        )
        return stopped
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(LOST_SIGNAL, signal.SIG_IGN)  # a late heartbeat's signal changes nothing
        shutil.rmtree(run_dir, ignore_errors=True)

    if outcome.reason is FailureReason.INFRASTRUCTURE and current_attempt < settings.max_attempts:
        store = _hand_back
    else:
        store = _record
    db.retry_while_unreachable(
        settings,
        lambda: store(settings, submission_id, current_attempt, outcome),
        what=f"storing the result of submission {submission_id}",
    )
    if store is _record and outcome.status is SubmissionStatus.COMPLETED:
        notifications.announce_leader(settings, submission_id)  # never raises
    return outcome


def evaluate_archive(
    settings: Settings,
    *,
    submission_id: int,
    file_path: str,
    sha256: str,
    run_dir: Path,
    worker_id: str,
    labels: Mapping[str, str] | None = None,
) -> Outcome:
    """The single catch-all at the job boundary: every exception becomes an Outcome.

    Fetches and unpacks the submission's archive into ``run_dir`` and evaluates it; a final's
    re-measurements go through here too (``labels`` names the final on its sandboxes).
    """
    try:
        # Inside the catch-all and the heartbeat: a download may take a while, or fail.
        archive_path = fetch_archive(
            settings, submission_id=submission_id, file_path=file_path, sha256=sha256
        )
        submission_dir = run_dir / "submission"
        archive.unpack(archive_path, submission_dir, archive.ArchiveLimits.from_settings(settings))
        evaluation = evaluate(
            settings,
            track=submission_track(settings, submission_id),
            submission_dir=submission_dir,
            run_dir=run_dir,
            labels={
                **(labels or {}),
                "submission": str(submission_id),
                "worker": worker_id,
                "slot": worker_slot(worker_id),
            },
            worker_id=worker_id,
        )
        return completed(evaluation)
    except StageFailed as exc:
        return Outcome(
            SubmissionStatus.FAILED,
            None,
            exc.logs,
            exc.reason,
            exc.message,
            public_logs=exc.public_logs,
        )
    except RunFailed as exc:
        return Outcome(SubmissionStatus.FAILED, None, exc.logs, exc.reason, exc.message)
    except InvalidUpload as exc:
        return Outcome(
            SubmissionStatus.FAILED, None, "", FailureReason.INVALID_ARCHIVE, exc.message
        )
    except (SandboxUnavailable, ArchiveUnavailable) as exc:
        return Outcome(SubmissionStatus.FAILED, None, "", FailureReason.INFRASTRUCTURE, exc.message)
    except Exception:
        log.exception("submission %s: internal error", submission_id)
        return Outcome(
            SubmissionStatus.FAILED,
            None,
            traceback.format_exc(limit=20),
            FailureReason.INFRASTRUCTURE,
            "The platform hit an internal error while evaluating this submission; "
            "it was not your code's fault.",
        )


def finite_json(value: Any) -> Any:
    """``value`` with NaN and infinities as None: JSON has no such numbers (PostgreSQL refuses)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was dropped."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters dropped]"


def _record(settings: Settings, submission_id: int, attempt: int, outcome: Outcome) -> None:
    """Store the outcome, unless a newer attempt owns the row (a late result is discarded)."""
    with db.session_scope(settings) as session:
        result = session.execute(
            update(Submission)
            .where(running_attempt(submission_id, attempt))
            .values(
                status=outcome.status,
                finished_at=utcnow(),
                result_metrics=outcome.metrics,
                failure_reason=outcome.reason,
                failure_message=outcome.message,
                logs=truncate(outcome.logs, 2 * settings.log_cap_bytes),
                public_logs=truncate(outcome.public_logs, 2 * settings.log_cap_bytes),
                # Each result is judged afresh: an earlier attempt's review does not carry over.
                review=outcome.review,
                audit=outcome.audit,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            log.warning("submission %s attempt %s: result discarded", submission_id, attempt)
            return
    record_outcome(outcome.status, outcome.reason)


def _hand_back(settings: Settings, submission_id: int, attempt: int, outcome: Outcome) -> None:
    """An infrastructure failure is not the participant's: queue a fresh attempt."""
    log.warning(
        "submission %s attempt %s: infrastructure failure, retrying: %s",
        submission_id,
        attempt,
        outcome.message,
    )
    with db.session_scope(settings) as session:
        session.execute(
            update(Submission)
            .where(running_attempt(submission_id, attempt))
            .values(
                status=SubmissionStatus.QUEUED,
                attempt=attempt + 1,
                worker_id=None,
                started_at=None,
                logs=truncate(outcome.logs, 2 * settings.log_cap_bytes),
            )
            .execution_options(synchronize_session=False)
        )
    producer.enqueue_submission(settings, submission_id, attempt + 1)

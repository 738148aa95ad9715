"""The worker's side of a final ranking: every re-measurement of one final, in round order.

One RQ job runs the whole final on the worker that took it (its cores, its devices): round 1 of
every entry, then round 2, ..., so drift on the machine hits every entry alike. Each archive is
fetched and unpacked as for a submission and evaluated on the hidden prompts (no public check:
these archives passed it already). Each measurement is stored as soon as it ends, a failure with
its reason and sentence. The final moves ``queued → running`` only through a conditional UPDATE
(a duplicate delivery does nothing) and always ends ``completed`` or ``failed``.
"""

from __future__ import annotations

import functools
import logging
import shutil
import uuid
from dataclasses import dataclass

from sqlalchemy import select, update

from edc import db
from edc.config import Settings
from edc.models import Final, Measurement, Submission, utcnow
from edc.observability.logging import log_context
from edc.services import notifications
from edc.status import FailureReason, FinalStatus, MeasurementStatus, SubmissionStatus
from edc.worker.executor import (
    Outcome,
    WorkerStopping,
    evaluate_archive,
    finite_json,
    truncate,
    work_horse_context,
)
from edc.worker.heartbeat import Heartbeat

log = logging.getLogger(__name__)


def run_final(final_id: int) -> None:
    """RQ entry point: only the final's id travels through Redis."""
    settings, worker_id = work_horse_context()
    run(settings, final_id, worker_id=worker_id)


def run(settings: Settings, final_id: int, *, worker_id: str) -> FinalStatus | None:
    """Claim the final, take every measurement, record how it ended. None when not ours."""
    with log_context(final_id=final_id, worker_id=worker_id):
        if not _claim(settings, final_id, worker_id):
            log.info("final %s: not queued for us; nothing to do", final_id)
            return None
        # The single catch-all at the job boundary: the final ends completed or failed.
        try:
            with Heartbeat(settings, lambda: _beat(settings, final_id), what=f"final {final_id}"):
                taken = _measure_all(settings, final_id, worker_id)
            status, message = _ending(taken, worker_id)
        except WorkerStopping:
            log.info("final %s: worker stopping", final_id)
            status = FinalStatus.FAILED
            message = (
                "The worker was shut down during the final; the measurements taken are kept. "
                "Start a new final."
            )
        except Exception as exc:
            log.exception("final %s: internal error", final_id)
            status = FinalStatus.FAILED
            message = (
                f"The final stopped on an internal error ({type(exc).__name__}: {exc}); "
                "the measurements taken are kept."
            )
        finished = db.retry_while_unreachable(
            settings,
            lambda: _finish(settings, final_id, status, message),
            what=f"recording the end of final {final_id}",
        )
        # Published: once, by the worker whose UPDATE completed it.
        if finished and status is FinalStatus.COMPLETED:
            notifications.announce_final(settings, final_id)  # never raises
        return status


def _claim(settings: Settings, final_id: int, worker_id: str) -> bool:
    with db.session_scope(settings) as session:
        result = session.execute(
            update(Final)
            .where(Final.id == final_id, Final.status == FinalStatus.QUEUED)
            .values(
                status=FinalStatus.RUNNING,
                started_at=utcnow(),
                heartbeat_at=utcnow(),
                worker_id=worker_id,
            )
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _finish(settings: Settings, final_id: int, status: FinalStatus, message: str) -> bool:
    """Record how the final ended; False when it was no longer running (someone else ended it)."""
    with db.session_scope(settings) as session:
        result = session.execute(
            update(Final)
            .where(Final.id == final_id, Final.status == FinalStatus.RUNNING)
            .values(status=status, finished_at=utcnow(), message=message)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Planned:
    """The next measurement to take, with what is needed to fetch its archive."""

    id: int
    final_id: int
    submission_id: int
    round: int
    file_path: str
    sha256: str


@dataclass
class Taken:
    """What the measurements of one final came to."""

    done: int = 0
    failed: int = 0
    # The entry a measurement of which the platform failed to take, try after try (its fault,
    # not the entry's): the final stops there.
    lost: int | None = None


def _ending(taken: Taken, worker_id: str) -> tuple[FinalStatus, str]:
    """How a final ends once its measurements stop. A published final never changes, so one
    that lost a measurement to the platform (an archive it could not fetch, a sandbox that did
    not start) is not published: it fails, and finalizing the track again measures anew."""
    if taken.lost is not None:
        return FinalStatus.FAILED, (
            f"{_measurements(taken.done)} on {worker_id}, then the platform failed to measure "
            f"submission {taken.lost} at every try; the final stopped there and is not "
            "published (the measurements taken are kept). Mend the cause (the worker's log says "
            "it), then finalize the track again."
        )
    return FinalStatus.COMPLETED, f"{_measurements(taken.done)} on {worker_id}" + (
        f", {taken.failed} of them failed." if taken.failed else ", all completed."
    )


def _measurements(count: int) -> str:
    return f"{count} measurement{'' if count == 1 else 's'}"


def _measure_all(settings: Settings, final_id: int, worker_id: str) -> Taken:
    """Take the pending measurements in plan order, each tried again (up to
    ``EDC_MAX_ATTEMPTS`` in all) while it fails for the platform's reasons, as submissions are;
    stop at one that still does: the final cannot be published without it."""
    quiet = settings.model_copy(update={"public_check": False})
    taken = Taken()
    while (planned := _next(settings, final_id, worker_id)) is not None:
        with log_context(submission_id=planned.submission_id, round=planned.round):
            for attempt in range(1, settings.max_attempts + 1):
                outcome = _measure(quiet, planned, worker_id)
                if outcome.reason is not FailureReason.INFRASTRUCTURE:
                    break
                log.warning(
                    "final %s: measuring submission %s failed for the platform's reasons "
                    "(try %d of %d)",
                    final_id,
                    planned.submission_id,
                    attempt,
                    settings.max_attempts,
                )
        db.retry_while_unreachable(
            settings,
            functools.partial(_store, settings, planned.id, outcome),
            what=f"storing measurement {planned.id} of final {final_id}",
        )
        taken.done += 1
        if outcome.status is not SubmissionStatus.COMPLETED:
            taken.failed += 1
            if outcome.reason is FailureReason.INFRASTRUCTURE:
                taken.lost = planned.submission_id
                break
    return taken


def _next(settings: Settings, final_id: int, worker_id: str) -> Planned | None:
    """The first pending measurement: round 1 of every entry, then round 2, ..."""
    with db.session_scope(settings) as session:
        row = session.execute(
            select(
                Measurement.id,
                Measurement.submission_id,
                Measurement.round,
                Submission.file_path,
                Submission.sha256,
            )
            .join(Submission, Submission.id == Measurement.submission_id)
            .where(
                Measurement.final_id == final_id,
                Measurement.status == MeasurementStatus.PENDING,
            )
            .order_by(Measurement.round, Measurement.position, Measurement.id)
            .limit(1)
        ).first()
        if row is None:
            return None
        session.execute(
            update(Measurement)
            .where(Measurement.id == row.id)
            .values(started_at=utcnow(), worker_id=worker_id)
            .execution_options(synchronize_session=False)
        )
        return Planned(row.id, final_id, row.submission_id, row.round, row.file_path, row.sha256)


def _measure(settings: Settings, planned: Planned, worker_id: str) -> Outcome:
    """One evaluation of the archive; every exception becomes an Outcome (as in the executor)."""
    run_dir = settings.runs_dir / (
        f"final-{planned.final_id}-{planned.submission_id}-r{planned.round}-{uuid.uuid4().hex[:8]}"
    )
    try:
        return evaluate_archive(
            settings,
            submission_id=planned.submission_id,
            file_path=planned.file_path,
            sha256=planned.sha256,
            run_dir=run_dir,
            worker_id=worker_id,
            labels={"final": str(planned.final_id)},
        )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _store(settings: Settings, measurement_id: int, outcome: Outcome) -> None:
    metrics = outcome.metrics or {}
    score = metrics.get("score")
    ranked_score = (
        float(score)
        if outcome.status is SubmissionStatus.COMPLETED
        and metrics.get("correct") is True
        and isinstance(score, int | float)
        and not isinstance(score, bool)
        else None
    )
    values: dict[str, object] = {
        "finished_at": utcnow(),
        "logs": truncate(outcome.logs, 2 * settings.log_cap_bytes),
        "metrics": finite_json(outcome.metrics),
        "audit": outcome.audit,
    }
    if ranked_score is not None:
        values.update(status=MeasurementStatus.COMPLETED, score=ranked_score)
    else:
        values.update(
            status=MeasurementStatus.FAILED,
            failure_reason=outcome.reason or FailureReason.WRONG_OUTPUT,
            failure_message=outcome.message or "The run ended without a correct, scored result.",
        )
    with db.session_scope(settings) as session:
        session.execute(
            update(Measurement)
            .where(
                Measurement.id == measurement_id,
                Measurement.status == MeasurementStatus.PENDING,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def _beat(settings: Settings, final_id: int) -> bool:
    """Refresh the final's ``heartbeat_at`` while it runs, so a final whose worker died can be
    told from one that runs long; a final is never handed away, so it is always still ours."""
    with db.session_scope(settings) as session:
        session.execute(
            update(Final)
            .where(Final.id == final_id, Final.status == FinalStatus.RUNNING)
            .values(heartbeat_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    return True

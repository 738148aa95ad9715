"""The worker's side of a stale result's re-measurement (see ``edc.services.rescore``).

The submission's archive is fetched and evaluated again as for a submission, under today's task
and harness; a correct result replaces the stale one. The row stays ``completed`` throughout (it
never waits or runs as a submission, so it counts against no limit), and the new result is
written only while the row is still the same attempt and still stale: a rerun or a second
re-measurement in between wins. A failed re-measurement leaves the result stale, with why. A
fresh result written is ranked again, so a rank 1 it takes is announced, as after a submission's.
"""

from __future__ import annotations

import logging
import shutil
import uuid

from sqlalchemy import ColumnElement, and_, select, update

from edc import db
from edc.config import Settings
from edc.models import Submission, utcnow
from edc.observability.logging import log_context
from edc.services import notifications
from edc.status import SubmissionStatus
from edc.worker.executor import Outcome, evaluate_archive, finite_json, work_horse_context

log = logging.getLogger(__name__)


def remeasure_result(submission_id: int, attempt: int) -> None:
    """RQ entry point: only the submission's id and attempt travel through Redis."""
    settings, worker_id = work_horse_context()
    with log_context(submission_id=submission_id, worker_id=worker_id):
        remeasure(settings, submission_id, attempt, worker_id=worker_id)


def _still_stale(submission_id: int, attempt: int) -> ColumnElement[bool]:
    return and_(
        Submission.id == submission_id,
        Submission.attempt == attempt,
        Submission.status == SubmissionStatus.COMPLETED,
        Submission.score.is_(None),  # the generated column: stale, or never scored
    )


def remeasure(settings: Settings, submission_id: int, attempt: int, *, worker_id: str) -> bool:
    """Measure the submission again; True when its new result replaced the stale one."""
    with db.session_scope(settings) as session:
        row = session.execute(
            select(Submission.file_path, Submission.sha256, Submission.result_metrics).where(
                _still_stale(submission_id, attempt)
            )
        ).first()
    if row is None or not isinstance(row.result_metrics, dict):
        log.info(
            "submission %s: no stale result of attempt %s to re-measure", submission_id, attempt
        )
        return False
    run_dir = settings.runs_dir / f"remeasure-{submission_id}-{uuid.uuid4().hex[:8]}"
    try:
        outcome = evaluate_archive(
            settings,
            submission_id=submission_id,
            file_path=row.file_path,
            sha256=row.sha256,
            run_dir=run_dir,
            worker_id=worker_id,
            labels={"stage": "remeasure"},
        )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return _store(settings, submission_id, attempt, row.result_metrics, outcome)


def _store(
    settings: Settings,
    submission_id: int,
    attempt: int,
    stale: dict[str, object],
    outcome: Outcome,
) -> bool:
    metrics = outcome.metrics or {}
    fresh = outcome.status is SubmissionStatus.COMPLETED and metrics.get("correct") is True
    if fresh:
        values: dict[str, object] = {
            "result_metrics": finite_json({**metrics, "remeasured_from": stale}),
            "review": outcome.review,
            "audit": outcome.audit,
            "finished_at": utcnow(),
        }
    else:
        failure = {
            "reason": (outcome.reason.value if outcome.reason else "wrong_output"),
            "message": outcome.message or "The run ended without a correct, scored result.",
        }
        values = {"result_metrics": {**stale, "remeasure_failed": failure}}
    with db.session_scope(settings) as session:
        done = session.execute(
            update(Submission)
            .where(_still_stale(submission_id, attempt))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    written = bool(done.rowcount)  # type: ignore[attr-defined]
    log.info(
        "submission %s re-measured: %s",
        submission_id,
        ("a current result" if fresh else f"failed ({outcome.message})")
        if written
        else "discarded (the row changed meanwhile)",
    )
    if fresh and written:
        notifications.announce_leader(settings, submission_id)  # never raises
    return fresh and written

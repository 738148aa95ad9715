"""What organisers do to submissions: rerun, cancel, disqualify or restore, clear a review flag,
mark baselines, export.

Status changes are conditional UPDATEs (the row must still be in the state the action expects),
so an action racing a worker either wins cleanly or is refused with Conflict, never half-done.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from edc import db
from edc.clock import aware_utc
from edc.config import Settings
from edc.errors import Conflict, NotFound, ServiceUnavailable
from edc.models import Submission, User, utcnow
from edc.scheduler import producer
from edc.services.exports import csv_line
from edc.status import ReviewState, SubmissionStatus

log = logging.getLogger(__name__)

WAITING = (SubmissionStatus.QUEUED, SubmissionStatus.PROCESSING)
FINAL = (SubmissionStatus.COMPLETED, SubmissionStatus.FAILED, SubmissionStatus.CANCELLED)


def _changed(result: Any) -> bool:
    return bool(result.rowcount == 1)


def existing(session: Session, submission_id: int) -> Submission:
    row = session.get(Submission, submission_id)
    if row is None:
        raise NotFound(f"There is no submission {submission_id}.")
    return row


def rerun(settings: Settings, *, submission_id: int) -> int:
    """Evaluate a finished submission again as a new attempt; returns the attempt number.

    Its previous result is cleared; the window and the limits do not apply (admins only).
    """
    with db.session_scope(settings) as session:
        row = existing(session, submission_id)
        attempt = row.attempt + 1
        now = utcnow()
        result = session.execute(
            update(Submission)
            .where(
                Submission.id == submission_id,
                Submission.attempt == row.attempt,
                Submission.status.in_(FINAL),
            )
            .values(
                status=SubmissionStatus.QUEUED,
                attempt=attempt,
                queued_at=now,
                started_at=None,
                finished_at=None,
                heartbeat_at=None,
                worker_id=None,
                result_metrics=None,
                failure_reason=None,
                failure_message=None,
                logs=None,
                public_logs=None,
                # Both belong to the result being cleared; the new one brings its own.
                review=None,
                audit=None,
            )
            .execution_options(synchronize_session=False)
        )
        if not _changed(result):
            raise Conflict(
                f"Submission {submission_id} is {row.status.value}: only a finished submission "
                f"can be rerun (cancel it first)."
            )
    _enqueue(settings, submission_id, attempt)
    return attempt


def _enqueue(settings: Settings, submission_id: int, attempt: int) -> None:
    try:
        producer.enqueue_submission(settings, submission_id, attempt)
    except ServiceUnavailable as exc:
        log.warning(
            "submission %d is queued in the database but not on the job queue "
            "(the reconciler will enqueue it): %s",
            submission_id,
            exc.message,
        )


def cancel(
    settings: Settings, *, submission_id: int, by_name: str, by_admin: bool
) -> SubmissionStatus:
    """Stop a waiting or running submission; returns the status it had.

    A queued one leaves the queue. A processing one is marked cancelled: its worker finds the
    row no longer its own at the next heartbeat, stops the run and discards the result.
    """
    who = "an organiser" if by_admin else "its owner"
    with db.session_scope(settings) as session:
        row = existing(session, submission_id)
        was, attempt = row.status, row.attempt
        result = session.execute(
            update(Submission)
            .where(
                Submission.id == submission_id,
                Submission.attempt == attempt,
                Submission.status.in_(WAITING),
            )
            .values(
                status=SubmissionStatus.CANCELLED,
                finished_at=utcnow(),
                failure_reason=None,
                failure_message=f"Cancelled by {who} ({by_name}).",
            )
            .execution_options(synchronize_session=False)
        )
        if not _changed(result):
            raise Conflict(
                f"Submission {submission_id} is {row.status.value}: only a queued or running "
                f"submission can be cancelled."
            )
    if was is SubmissionStatus.QUEUED:
        try:
            producer.remove_queued_job(settings, submission_id, attempt)
        except ServiceUnavailable as exc:
            # The row is cancelled: a worker that still gets the job cannot claim it.
            log.warning("submission %d cancelled but its job stays queued: %s", submission_id, exc)
    return was


def set_disqualified(
    session: Session, *, submission_id: int, disqualified: bool, reason: str | None = None
) -> Submission:
    row = existing(session, submission_id)
    row.disqualified = disqualified
    row.disqualified_reason = None
    if disqualified and reason and reason.strip():
        row.disqualified_reason = reason.strip()
    session.flush()
    return row


def clear_review(session: Session, *, submission_id: int) -> Submission:
    """An organiser looked at a flagged result and accepts it: it stays ranked, unmarked.

    (The other way out of a flag is :func:`set_disqualified`.)
    """
    row = existing(session, submission_id)
    result = session.execute(
        update(Submission)
        .where(Submission.id == submission_id, Submission.review == ReviewState.FLAGGED)
        .values(review=ReviewState.CLEARED)
        .execution_options(synchronize_session=False)
    )
    if not _changed(result):
        raise Conflict(f"Submission {submission_id} is not flagged for review.")
    session.refresh(row)
    return row


def set_baseline(session: Session, *, submission_id: int, baseline: bool) -> Submission:
    row = existing(session, submission_id)
    row.is_baseline = baseline
    session.flush()
    return row


SUBMISSION_CSV_COLUMNS = (
    "id",
    "participant",
    "status",
    "failure_reason",
    "failure_message",
    "score",
    "correct",
    "baseline",
    "disqualified",
    "attempt",
    "original_filename",
    "sha256",
    "size_bytes",
    "created_at",
    "started_at",
    "finished_at",
    "worker_id",
    "review",
)


def submissions_csv(settings: Settings, *, batch: int = 2000) -> Iterator[str]:
    """Every submission as CSV, streamed in id order a batch at a time (bounded memory)."""
    yield csv_line(SUBMISSION_CSV_COLUMNS)
    last_id = 0
    while True:
        with db.session_scope(settings) as session:
            rows = session.execute(
                select(Submission, User.name)
                .join(User, User.id == Submission.user_id, isouter=True)
                .where(Submission.id > last_id)
                .order_by(Submission.id)
                .limit(batch)
            ).all()
        if not rows:
            return
        lines = []
        for submission, name in rows:
            lines.append(csv_line(_submission_fields(submission, name)))
        last_id = rows[-1][0].id
        yield "".join(lines)


def _submission_fields(s: Submission, participant: str | None) -> tuple[Any, ...]:
    def iso(moment: datetime | None) -> str:
        return aware_utc(moment).isoformat() if moment is not None else ""

    return (
        s.id,
        participant or "",
        s.status.value,
        s.failure_reason.value if s.failure_reason else "",
        s.failure_message or "",
        "" if s.score is None else repr(float(s.score)),
        "" if s.correct is None else ("yes" if s.correct else "no"),
        "yes" if s.is_baseline else "",
        "yes" if s.disqualified else "",
        s.attempt,
        s.original_filename,
        s.sha256,
        s.size_bytes,
        iso(s.created_at),
        iso(s.started_at),
        iso(s.finished_at),
        s.worker_id or "",
        s.review.value if s.review else "",
    )

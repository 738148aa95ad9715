"""Where a queued submission stands: the one rule, used by pages, API, live events and CLI.

Today the queue is first come, first served by the time a submission (last) joined it. A fairer
rule (round-robin across participants) changes only this module.
"""

from __future__ import annotations

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from edc.models import Submission, SubmissionStatus


def queue_position(session: Session, submission: Submission) -> int | None:
    """1 for the next submission a worker takes; None when it is not waiting in the queue."""
    if submission.status is not SubmissionStatus.QUEUED:
        return None
    ahead = session.scalar(
        select(func.count())
        .select_from(Submission)
        .where(
            Submission.status == SubmissionStatus.QUEUED,
            or_(
                Submission.queued_at < submission.queued_at,
                and_(
                    Submission.queued_at == submission.queued_at,
                    Submission.id < submission.id,
                ),
            ),
        )
    )
    return int(ahead or 0) + 1


def queue_in_order(session: Session, *, limit: int) -> tuple[list[Submission], int]:
    """The first ``limit`` queued submissions in the order workers take them, and how many wait."""
    waiting = select(Submission).where(Submission.status == SubmissionStatus.QUEUED)
    rows = session.scalars(waiting.order_by(Submission.queued_at, Submission.id).limit(limit)).all()
    total = session.scalar(
        select(func.count())
        .select_from(Submission)
        .where(Submission.status == SubmissionStatus.QUEUED)
    )
    return list(rows), int(total or 0)

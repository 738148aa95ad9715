"""The order in which workers take queued submissions: the one rule, used by the workers
(edc.scheduler.producer), pages, API, live events and CLI.

Round-robin across participants, per hardware class. Each participant's submissions wait in their
own queue, first come first served. The next job is the head of the queue of the participant
served least recently (never served first; ties: whose head has waited longest). Being served
sends a participant to the back, so participants take turns, and one participant's fifty queued
submissions hold back another's single one by at most one job per worker.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Integer, and_, func, literal_column, or_, select
from sqlalchemy.orm import Session

from edc.models import Submission
from edc.status import SubmissionStatus

NO_OWNER = 0  # rows from before accounts existed queue as one more participant


def service_order(session: Session, hardware_class: str) -> list[int]:
    """Participants with submissions waiting in the class, in the order they are served."""
    heads = dict(
        session.execute(
            select(_owner_column(), func.min(Submission.queued_at))
            .where(
                Submission.status == SubmissionStatus.QUEUED,
                Submission.hardware_class == hardware_class,
            )
            .group_by(_owner_column())
        ).all()
    )
    if not heads:
        return []
    served = dict(
        session.execute(
            select(_owner_column(), func.max(Submission.started_at))
            .where(
                Submission.hardware_class == hardware_class,
                Submission.started_at.is_not(None),
                _owner_column().in_(list(heads)),
            )
            .group_by(_owner_column())
        ).all()
    )
    return sorted(heads, key=lambda o: _turn_key(served.get(o), _aware(heads[o]), o))


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; they are UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _turn_key(
    last_served: datetime | None, head_queued_at: datetime, owner: int
) -> tuple[bool, datetime, datetime, int]:
    never = datetime.min.replace(tzinfo=UTC)
    served_at = _aware(last_served) if last_served is not None else never
    return (last_served is not None, served_at, head_queued_at, owner)


def _owner(submission: Submission) -> int:
    return submission.user_id if submission.user_id is not None else NO_OWNER


def _owner_column() -> ColumnElement[int]:
    # A literal, not a bound parameter: PostgreSQL must see the GROUP BY expression as the same.
    return func.coalesce(Submission.user_id, literal_column(str(NO_OWNER), Integer))


def queue_position(session: Session, submission: Submission) -> int | None:
    """1 for the next submission a worker takes; None when it is not waiting in the queue.

    If the submission is the k-th waiting one of its owner (k from 0), every participant gets
    min(k, their count) turns before it, plus one more for each participant served before its
    owner in the current round who still has a (k+1)-th submission waiting.
    """
    if submission.status is not SubmissionStatus.QUEUED:
        return None
    waiting = and_(
        Submission.status == SubmissionStatus.QUEUED,
        Submission.hardware_class == submission.hardware_class,
    )
    owner = _owner(submission)
    k = int(
        session.scalar(
            select(func.count())
            .select_from(Submission)
            .where(
                waiting,
                _owner_column() == owner,
                or_(
                    Submission.queued_at < submission.queued_at,
                    and_(
                        Submission.queued_at == submission.queued_at,
                        Submission.id < submission.id,
                    ),
                ),
            )
        )
        or 0
    )
    counts: dict[int, int] = {
        int(o): int(n)
        for o, n in session.execute(
            select(_owner_column(), func.count()).where(waiting).group_by(_owner_column())
        ).all()
    }
    order = service_order(session, submission.hardware_class)
    before = order[: order.index(owner)] if owner in order else []
    ahead = sum(min(n, k) for n in counts.values()) + sum(1 for o in before if counts[o] > k)
    return ahead + 1


def fair_order(waiting: Sequence[Submission], order: Sequence[int]) -> list[Submission]:
    """``waiting`` (one hardware class) in the order workers take them, given the participants'
    ``order`` of service."""
    by_owner: dict[int, list[Submission]] = defaultdict(list)
    for row in sorted(waiting, key=lambda r: (r.queued_at, r.id)):
        by_owner[_owner(row)].append(row)
    order = [o for o in order if o in by_owner] + sorted(set(by_owner) - set(order))
    result: list[Submission] = []
    for turn in range(max((len(v) for v in by_owner.values()), default=0)):
        result.extend(by_owner[o][turn] for o in order if turn < len(by_owner[o]))
    return result


def queue_in_order(session: Session, *, limit: int) -> tuple[list[Submission], int]:
    """The first ``limit`` queued submissions in the order workers take them (class by class),
    and how many wait in all."""
    rows = session.scalars(
        select(Submission).where(Submission.status == SubmissionStatus.QUEUED)
    ).all()
    by_class: dict[str, list[Submission]] = defaultdict(list)
    for row in rows:
        by_class[row.hardware_class].append(row)
    ordered: list[Submission] = []
    for hardware_class in sorted(by_class):
        order = service_order(session, hardware_class)
        ordered.extend(fair_order(by_class[hardware_class], order))
    return ordered[:limit], len(rows)

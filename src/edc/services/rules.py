"""The competition's rules for uploads: the window they are open in, and each participant's limits.

**The window.** Outside ``[competition_start, competition_end)`` uploads are refused with a
sentence saying when the window opens or that it has closed. Admins are not bound by it (they may
rerun, and upload baselines, at any time).

**The limits.** So many submissions per rolling day, so many waiting at once, counted per track
and shared by a team's members
(a track may set its own; where it does not, the platform's ``EDC_SUBMISSIONS_PER_DAY`` and
``EDC_MAX_QUEUED_PER_USER`` apply). What counts: every submission except those cancelled and those
that failed for an infrastructure reason (the platform's fault, not the participant's). Admins are
not limited. Over a limit the refusal says exactly when the next upload is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, bindparam, func, not_, or_, select, update
from sqlalchemy.orm import Session

from edc.clock import aware_utc, human_duration
from edc.config import Settings
from edc.errors import CompetitionClosed, RateLimited
from edc.models import DEFAULT_TRACK, Submission, Team, User, utcnow
from edc.services.teams import teammates
from edc.status import FailureReason, SubmissionStatus

DAY = timedelta(days=1)
WAITING = (SubmissionStatus.QUEUED, SubmissionStatus.PROCESSING)
# A guess for "when one of your waiting submissions finishes", for Retry-After.
WAITING_RETRY_S = 30


@dataclass(frozen=True)
class Window:
    start: datetime | None
    end: datetime | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Window:
        return cls(settings.competition_start, settings.competition_end)

    def has_started(self, now: datetime) -> bool:
        return self.start is None or now >= self.start

    def has_ended(self, now: datetime) -> bool:
        return self.end is not None and now >= self.end

    def is_open(self, now: datetime) -> bool:
        return self.has_started(now) and not self.has_ended(now)

    def describe(self, now: datetime) -> str:
        """One sentence for the pages: open until when, opens when, or closed since when."""
        if not self.has_started(now):
            assert self.start is not None
            return f"The competition opens at {_utc(self.start)}."
        if self.has_ended(now):
            assert self.end is not None
            return f"The competition closed at {_utc(self.end)}."
        if self.end is not None:
            return f"The competition is open until {_utc(self.end)}."
        return "The competition is open."


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def check_uploads_open(
    settings: Settings, *, now: datetime | None = None, window: Window | None = None
) -> None:
    """Raise CompetitionClosed outside ``window`` (default: the platform's)."""
    window = window or Window.from_settings(settings)
    now = now or utcnow()
    if not window.has_started(now):
        assert window.start is not None
        raise CompetitionClosed(
            f"The competition has not started: uploads open at {_utc(window.start)}."
        )
    if window.has_ended(now):
        assert window.end is not None
        raise CompetitionClosed(f"The competition is over: uploads closed at {_utc(window.end)}.")


def counts_against_limit() -> ColumnElement[bool]:
    """Rows that use up a participant's allowance."""
    return not_(
        or_(
            Submission.status == SubmissionStatus.CANCELLED,
            and_(
                Submission.status == SubmissionStatus.FAILED,
                Submission.failure_reason == FailureReason.INFRASTRUCTURE,
            ),
        )
    )


@dataclass(frozen=True)
class Limits:
    """A participant's allowance in one track."""

    per_day: int
    max_waiting: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.submissions_per_day, settings.max_queued_per_user)


@dataclass(frozen=True)
class Usage:
    """Where a participant stands against the limits."""

    used_today: int
    per_day: int
    waiting: int
    max_waiting: int
    # When the daily allowance has room again; None while it has room now.
    next_allowed_at: datetime | None


def _is_waiting() -> ColumnElement[bool]:
    # Spelled out, not ``in_``: an IN list is expanded again at every execution.
    return or_(*(Submission.status == status for status in WAITING))


# The statements below are built once, with bound parameters (``user_id``, ``track``, ``since``):
# building them took longer than running them, and intake counts twice per upload.
_MINE = (
    Submission.user_id.in_(teammates(bindparam("user_id"))),
    Submission.track == bindparam("track"),
)
_SINCE = Submission.created_at > bindparam("since")
# Waiting and counted-today submissions of a participant's team in a track, in one pass.
_USAGE = select(
    func.count().filter(_is_waiting()),
    func.count().filter(_SINCE, counts_against_limit()),
).where(*_MINE, or_(_is_waiting(), _SINCE))
# The counted-today submission whose leaving the window makes room (``skip`` the ones before it).
_ROOM_AFTER = (
    select(Submission.created_at)
    .where(*_MINE, _SINCE, counts_against_limit())
    .order_by(Submission.created_at)
    .offset(bindparam("skip"))
    .limit(1)
)


def usage(
    session: Session,
    limits: Limits,
    *,
    user_id: int,
    now: datetime,
    track: str = DEFAULT_TRACK,
) -> Usage:
    """Where ``user_id`` stands against ``limits`` in ``track``: its team's, if it is in one
    (members share them)."""
    # Counted in the database, both in one pass: a participant with thousands of uploads today
    # costs one aggregate, not thousands of rows read back, on each of the two checks of every
    # upload.
    params = {"user_id": user_id, "track": track, "since": now - DAY}
    waiting, used = session.execute(_USAGE, params).one()
    used_today = int(used or 0)
    next_allowed_at = None
    if used_today >= limits.per_day:
        # Room comes back when enough of the oldest leave the 24-hour window.
        skip = used_today - limits.per_day
        oldest_to_leave = session.scalar(_ROOM_AFTER, {**params, "skip": skip})
        if oldest_to_leave is not None:
            next_allowed_at = aware_utc(oldest_to_leave) + DAY
    return Usage(
        used_today=used_today,
        per_day=limits.per_day,
        waiting=int(waiting or 0),
        max_waiting=limits.max_waiting,
        next_allowed_at=next_allowed_at,
    )


def check_submission_allowed(
    session: Session,
    limits: Limits,
    *,
    user: User,
    now: datetime | None = None,
    track: str = DEFAULT_TRACK,
) -> None:
    """Raise RateLimited when ``user`` may not submit to ``track`` now. Admins always may."""
    if user.is_admin:
        return
    now = now or utcnow()
    state = usage(session, limits, user_id=user.id, now=now, track=track)
    where = "" if track == DEFAULT_TRACK else f" in the track {track!r}"
    if state.waiting >= state.max_waiting:
        raise RateLimited(
            f"You have {state.waiting} submission{'s' if state.waiting != 1 else ''}{where} "
            f"waiting or being evaluated, the most allowed at once; the next is allowed as soon "
            "as one of them finishes.",
            retry_after_s=WAITING_RETRY_S,
        )
    if state.next_allowed_at is not None:
        wait_s = int((state.next_allowed_at - now).total_seconds()) + 1
        raise RateLimited(
            f"You have used all {state.per_day} submissions{where} of the last 24 hours; the "
            f"next is allowed at {state.next_allowed_at:%Y-%m-%d %H:%M:%S} UTC "
            f"(in {human_duration(wait_s)}). "
            f"Failures that were the platform's fault and cancelled submissions do not count.",
            retry_after_s=wait_s,
        )


# Built once, as the usage query: both run on every upload.
_HOLD_USER = (
    update(User)
    .where(User.id == bindparam("user_id"))
    .values(last_submitted_at=bindparam("now"))
    .returning(User)
    .execution_options(synchronize_session=False)
)


def hold_user(session: Session, *, user_id: int, now: datetime) -> User | None:
    """Take the user's row lock, and its team's (PostgreSQL), or the write lock (SQLite) before
    counting; returns the user (None when the account is gone).

    Two uploads of one participant, or of two teammates, finishing at once are then counted one
    after the other, so both cannot slip under the limit. The team is read under the user's lock,
    which joining or leaving one needs too.
    """
    owner = session.scalar(_HOLD_USER, {"user_id": user_id, "now": now})
    if owner is not None and owner.team_id is not None:
        session.execute(select(Team.id).where(Team.id == owner.team_id).with_for_update())
    return owner

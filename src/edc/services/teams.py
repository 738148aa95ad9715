"""Teams: participants who compete as one.

::

    team = create_team(session, settings, user=alice, name="fast-decoders")  # team.invite_code
    join_team(session, settings, user=bob, code=team.invite_code)
    leave_team(session, user=bob)

A participant creates a team and hands its invite code to whoever should join; holding the code is
the permission. Members share each track's limits (counted over all their submissions) and appear
as one leaderboard row per track: the team's best distinct decoder, runs of one archive pooled
whoever submitted them (``edc.services.leaderboard``). A participant is in one team at most, a
team has at most ``EDC_MAX_TEAM_SIZE`` members, and a team whose last member leaves is gone.

Joining and leaving are refused once any track's final phase has opened: a final re-measures the
entries as they stand, and moving between teams then could carry a result into a second row.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from edc.config import Settings
from edc.errors import CompetitionClosed, Conflict, InvalidInput, NotFound
from edc.models import FINAL_PHASE, Team, Track, User
from edc.services.accounts import NAME_PATTERN


@dataclass(frozen=True)
class TeamInfo:
    name: str
    invite_code: str
    members: list[str]  # by name, in the order they joined (as far as ids tell)
    max_size: int


def teammates(user_id: int | ColumnElement[int]) -> Select[int]:
    """The ids of ``user_id``'s team's members, itself included; itself alone outside a team
    (``user_id`` may be a bound parameter, for a statement built once)."""
    team = select(User.team_id).where(User.id == user_id).scalar_subquery()
    return select(User.id).where((User.id == user_id) | (User.team_id == team))


def team_of(session: Session, settings: Settings, user_id: int) -> TeamInfo | None:
    user = session.get(User, user_id)
    if user is None or user.team_id is None:
        return None
    team = session.get(Team, user.team_id)
    assert team is not None
    return _info(session, settings, team)


def _invite_code() -> str:
    """A random invite code that does not start with "-": `edc team join CODE` would read that
    as an option."""
    while (code := secrets.token_urlsafe(18)).startswith("-"):
        pass
    return code


def create_team(session: Session, settings: Settings, *, user: User, name: str) -> TeamInfo:
    """A new team of ``user`` alone, named ``name``."""
    name = name.strip().lower()
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidInput(
            "A team name is 2-40 lowercase letters, digits, '.', '-' or '_', starting with a "
            f"letter or digit; {name!r} is not."
        )
    _check_teams_open(session)
    _check_alone(user)
    # A team shares the leaderboard with participants: one name must mean one row.
    taken = session.scalar(select(Team.id).where(Team.name == name)) or session.scalar(
        select(User.id).where(User.name == name, User.id != user.id)
    )
    if taken:
        raise Conflict(f"The name {name!r} is taken.")
    team = Team(name=name, invite_code=_invite_code())
    session.add(team)
    session.flush()
    user.team_id = team.id
    session.flush()
    return _info(session, settings, team)


def join_team(session: Session, settings: Settings, *, user: User, code: str) -> TeamInfo:
    """``user`` joins the team whose invite code is ``code``."""
    _check_teams_open(session)
    _check_alone(user)
    team = session.scalar(select(Team).where(Team.invite_code == code.strip()).with_for_update())
    if team is None:
        raise NotFound("No team has that invite code; ask a member for it again.")
    size = session.scalar(select(func.count()).where(User.team_id == team.id)) or 0
    if size >= settings.max_team_size:
        raise Conflict(
            f"The team {team.name} is full: a team has at most {settings.max_team_size} members."
        )
    user.team_id = team.id
    session.flush()
    return _info(session, settings, team)


def leave_team(session: Session, *, user: User) -> str:
    """``user`` leaves its team (removed once empty); returns the team's name."""
    if user.team_id is None:
        raise NotFound("You are not in a team.")
    _check_teams_open(session)
    team = session.get(Team, user.team_id)
    assert team is not None
    user.team_id = None
    session.flush()
    if not session.scalar(select(func.count()).where(User.team_id == team.id)):
        session.delete(team)
    session.flush()
    return team.name


def _check_alone(user: User) -> None:
    if user.team_id is not None:
        raise Conflict("You are already in a team; leave it first.")


def _check_teams_open(session: Session) -> None:
    final = session.scalar(select(Track.name).where(Track.phase == FINAL_PHASE).limit(1))
    if final is not None:
        raise CompetitionClosed(
            f"Teams are fixed: the final phase of the track {final!r} has opened."
        )


def _info(session: Session, settings: Settings, team: Team) -> TeamInfo:
    members = session.scalars(select(User.name).where(User.team_id == team.id).order_by(User.id))
    return TeamInfo(
        name=team.name,
        invite_code=team.invite_code,
        members=list(members),
        max_size=settings.max_team_size,
    )

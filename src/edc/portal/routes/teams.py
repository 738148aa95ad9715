"""The teams API: create one, join one with its invite code, leave it, see yours."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Response

from edc.errors import NotFound
from edc.models import User
from edc.portal.auth import CurrentIdentity
from edc.portal.deps import SessionDep, SettingsDep
from edc.schemas import ErrorOut, TeamIn, TeamJoinIn, TeamOut
from edc.services import teams

router = APIRouter(prefix="/teams", tags=["teams"])

_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No valid API token or session."},
}
_FIXED: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorOut, "description": "A track's final phase has opened: teams are fixed."},
}


def _user(session: SessionDep, identity: CurrentIdentity) -> User:
    user = session.get(User, identity.user_id)
    assert user is not None  # the identity was just read from it
    return user


def _out(team: teams.TeamInfo) -> TeamOut:
    return TeamOut(**dataclasses.asdict(team))


@router.get(
    "/mine",
    response_model=TeamOut,
    responses={**_AUTH, 404: {"model": ErrorOut, "description": "You are not in a team."}},
)
def my_team(settings: SettingsDep, session: SessionDep, identity: CurrentIdentity) -> TeamOut:
    """Your team, with its invite code and members."""
    team = teams.team_of(session, settings, identity.user_id)
    if team is None:
        raise NotFound("You are not in a team; create one or join one with its invite code.")
    return _out(team)


@router.post(
    "",
    status_code=201,
    response_model=TeamOut,
    responses={
        **_AUTH,
        **_FIXED,
        400: {"model": ErrorOut, "description": "Not a usable team name."},
        409: {"model": ErrorOut, "description": "The name is taken, or you are in a team."},
    },
)
def create_team(
    body: TeamIn, settings: SettingsDep, session: SessionDep, identity: CurrentIdentity
) -> TeamOut:
    """Create a team of you alone; others join it with its invite code."""
    return _out(teams.create_team(session, settings, user=_user(session, identity), name=body.name))


@router.post(
    "/join",
    response_model=TeamOut,
    responses={
        **_AUTH,
        **_FIXED,
        404: {"model": ErrorOut, "description": "No team has that invite code."},
        409: {"model": ErrorOut, "description": "The team is full, or you are in one."},
    },
)
def join_team(
    body: TeamJoinIn, settings: SettingsDep, session: SessionDep, identity: CurrentIdentity
) -> TeamOut:
    """Join the team whose invite code you were given."""
    user = _user(session, identity)
    return _out(teams.join_team(session, settings, user=user, code=body.invite_code))


@router.post(
    "/leave",
    status_code=204,
    responses={**_AUTH, **_FIXED, 404: {"model": ErrorOut, "description": "Not in a team."}},
)
def leave_team(session: SessionDep, identity: CurrentIdentity) -> Response:
    """Leave your team (a team whose last member leaves is gone)."""
    teams.leave_team(session, user=_user(session, identity))
    return Response(status_code=204)

"""Sign-up, log-in, log-out, and the account page with API tokens."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from edc import db
from edc.config import Settings
from edc.db import database_errors
from edc.errors import EdcError, InvalidInput
from edc.models import User
from edc.portal.auth import (
    Identity,
    OptionalIdentity,
    PageIdentity,
    clear_session_cookie,
    client_address,
    set_session_cookie,
)
from edc.portal.deps import TokenId
from edc.portal.errors import headers_for, status_for
from edc.portal.login_gate import LoginGate
from edc.portal.render import checked_form, form_text, render
from edc.services import accounts, teams

router = APIRouter(include_in_schema=False)


def _safe_next(target: str) -> str:
    """Only paths on this site: an open redirect would make the log-in page a phishing tool."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@router.get("/login", name="login_page")
async def login_page(request: Request, identity: OptionalIdentity, next: str = "/") -> Response:
    return render(
        request, "login.html", {"next": _safe_next(next), "error": None}, identity=identity
    )


@router.post("/login", name="login")
async def login(request: Request, identity: OptionalIdentity) -> Response:
    settings: Settings = request.app.state.settings
    form = await checked_form(request, identity)
    name, password = form_text(form, "name"), form_text(form, "password")
    target = _safe_next(form_text(form, "next") or "/")
    old_session = identity.session_id if identity else None

    def run() -> str:
        user = accounts.log_in(
            settings, name=name, password=password, client_address=client_address(request)
        )
        with database_errors(), db.session_scope(settings) as session:
            # A new session id at every log-in; the old one (if any) stops working.
            if old_session:
                accounts.end_web_session(session, old_session)
            fresh = session.get(User, user.id)
            assert fresh is not None
            return accounts.start_web_session(session, settings, user=fresh)

    try:
        # A blocked guesser is answered on the event loop: no thread, no database.
        accounts.refuse_if_blocked(settings, name=name, client_address=client_address(request))
        gate: LoginGate = request.app.state.login_gate
        async with gate.admitted():
            session_id = await run_in_threadpool(run)
    except EdcError as exc:
        context = {"next": target, "error": exc.message, "name": name}
        return render(
            request,
            "login.html",
            context,
            identity=identity,
            status_code=status_for(exc),
            headers=headers_for(exc),
        )
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, settings, session_id)
    return response


@router.get("/signup", name="signup_page")
async def signup_page(request: Request, identity: OptionalIdentity) -> Response:
    settings: Settings = request.app.state.settings
    return render(
        request, "signup.html", {"error": None, "signup": settings.signup}, identity=identity
    )


@router.post("/signup", name="signup")
async def signup(request: Request, identity: OptionalIdentity) -> Response:
    settings: Settings = request.app.state.settings
    form = await checked_form(request, identity)
    name, password = form_text(form, "name"), form_text(form, "password")
    old_session = identity.session_id if identity else None

    def run() -> str:
        if password != form_text(form, "password_again"):
            raise InvalidInput("The two passwords differ.")
        with database_errors(), db.session_scope(settings) as session:
            user = accounts.sign_up(
                session,
                settings,
                name=name,
                password=password,
                invite_code=form_text(form, "invite_code") or None,
                client_address=client_address(request),
            )
            if old_session:
                accounts.end_web_session(session, old_session)
            return accounts.start_web_session(session, settings, user=user)

    try:
        # A blocked guesser is answered on the event loop: no thread, no database.
        accounts.refuse_if_blocked(settings, name=name, client_address=client_address(request))
        gate: LoginGate = request.app.state.login_gate
        async with gate.admitted():
            session_id = await run_in_threadpool(run)
    except EdcError as exc:
        context = {"error": exc.message, "signup": settings.signup, "name": name}
        return render(
            request, "signup.html", context, identity=identity, status_code=status_for(exc)
        )
    response = RedirectResponse("/", status_code=303)
    set_session_cookie(response, settings, session_id)
    return response


@router.post("/logout", name="logout")
async def logout(request: Request, identity: OptionalIdentity) -> Response:
    settings: Settings = request.app.state.settings
    await checked_form(request, identity)
    if identity is not None and identity.session_id:
        session_id = identity.session_id

        def run() -> None:
            with database_errors(), db.session_scope(settings) as session:
                accounts.end_web_session(session, session_id)

        await run_in_threadpool(run)
    response = RedirectResponse("/", status_code=303)
    clear_session_cookie(response, settings)
    return response


def _account_context(settings: Settings, user_id: int) -> dict[str, Any]:
    with database_errors(), db.session_scope(settings) as session:
        user = session.get(User, user_id)
        assert user is not None
        return {
            "tokens": accounts.list_api_tokens(session, user=user),
            "team": teams.team_of(session, settings, user_id),
            "new_token": None,
            "error": None,
        }


@router.get("/account", name="account_page")
async def account_page(request: Request, identity: PageIdentity) -> Response:
    settings: Settings = request.app.state.settings
    context = await run_in_threadpool(_account_context, settings, identity.user_id)
    return render(request, "account.html", context, identity=identity)


@router.post("/account/tokens", name="create_token")
async def create_token(request: Request, identity: PageIdentity) -> Response:
    """A new API token, shown on this one page and never again."""
    settings: Settings = request.app.state.settings
    form = await checked_form(request, identity)

    def run() -> dict[str, Any]:
        with database_errors(), db.session_scope(settings) as session:
            user = session.get(User, identity.user_id)
            assert user is not None
            token = accounts.issue_api_token(
                session, user=user, label=form_text(form, "label") or "web"
            )
        context = _account_context(settings, identity.user_id)
        context["new_token"] = token
        return context

    context = await run_in_threadpool(run)
    # The page holds a secret: keep it out of caches and the back-forward history.
    return render(
        request, "account.html", context, identity=identity, headers={"Cache-Control": "no-store"}
    )


@router.post("/account/tokens/{token_id}/revoke", name="revoke_token")
async def revoke_token(token_id: TokenId, request: Request, identity: PageIdentity) -> Response:
    settings: Settings = request.app.state.settings
    await checked_form(request, identity)

    def run() -> None:
        with database_errors(), db.session_scope(settings) as session:
            user = session.get(User, identity.user_id)
            assert user is not None
            accounts.revoke_api_token(session, user=user, token_id=token_id)

    await run_in_threadpool(run)
    return RedirectResponse("/account", status_code=303)


TeamAction = Literal["create", "join", "leave"]


async def _team_action(action: TeamAction, request: Request, identity: Identity) -> Response:
    """Create a team (its name), join one (an invite code) or leave yours; a refusal shows on
    the error page with its sentence."""
    settings: Settings = request.app.state.settings
    form = await checked_form(request, identity)

    def run() -> None:
        with database_errors(), db.session_scope(settings) as session:
            user = session.get(User, identity.user_id)
            assert user is not None
            if action == "create":
                teams.create_team(session, settings, user=user, name=form_text(form, "name"))
            elif action == "join":
                teams.join_team(session, settings, user=user, code=form_text(form, "invite_code"))
            else:
                teams.leave_team(session, user=user)

    await run_in_threadpool(run)
    return RedirectResponse("/account#team", status_code=303)


@router.post("/account/team/create", name="create_team")
async def create_team(request: Request, identity: PageIdentity) -> Response:
    return await _team_action("create", request, identity)


@router.post("/account/team/join", name="join_team")
async def join_team(request: Request, identity: PageIdentity) -> Response:
    return await _team_action("join", request, identity)


@router.post("/account/team/leave", name="leave_team")
async def leave_team(request: Request, identity: PageIdentity) -> Response:
    return await _team_action("leave", request, identity)

"""Who is asking: an API token (``Authorization: Bearer …``) or the signed session cookie.

The caller is resolved in its own short transaction into a plain :class:`Identity`, so a long
upload or a live event stream holds no database connection. Requests authenticated by the
session cookie that change something must carry the CSRF token (form field or
``X-CSRF-Token`` header); bearer tokens are not sent by browsers on their own, so they need none.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from edc import db, security
from edc.config import Settings
from edc.db import database_errors
from edc.errors import Forbidden, NotAuthenticated
from edc.models import User
from edc.portal.deps import SettingsDep
from edc.services import accounts

SESSION_COOKIE = "edc_session"
CSRF_COOKIE = "edc_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_PURPOSE = "session"


@dataclass(frozen=True)
class Identity:
    """The authenticated caller, detached from any database session."""

    user_id: int
    name: str
    is_admin: bool
    via: Literal["token", "session"]
    # The raw session id, when authenticated by the cookie (CSRF tokens are bound to it).
    session_id: str | None = None

    @classmethod
    def of(
        cls, user: User, via: Literal["token", "session"], session_id: str | None = None
    ) -> Identity:
        return cls(user.id, user.name, user.is_admin, via, session_id)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def session_id_from_cookie(request: Request, settings: Settings) -> str | None:
    signed = request.cookies.get(SESSION_COOKIE)
    if not signed:
        return None
    return security.unsign(settings.secret_key, signed, purpose=SESSION_PURPOSE)


def _resolve(settings: Settings, token: str | None, session_id: str | None) -> Identity | None:
    with database_errors(), db.session_scope(settings) as session:
        if token is not None:
            user = accounts.user_for_api_token(session, token)
            if user is None:
                raise NotAuthenticated(
                    "The API token is not valid (it may have been revoked); "
                    "log in again with `edc login`."
                )
            return Identity.of(user, "token")
        if session_id is not None:
            user = accounts.user_for_web_session(session, session_id)
            if user is not None:
                return Identity.of(user, "session", session_id)
    return None


async def optional_identity(request: Request, settings: SettingsDep) -> Identity | None:
    """The caller, or None when anonymous (an unknown API token is refused, not ignored)."""
    if hasattr(request.state, "identity"):
        cached: Identity | None = request.state.identity
        return cached
    identity = await run_in_threadpool(
        _resolve, settings, bearer_token(request), session_id_from_cookie(request, settings)
    )
    request.state.identity = identity
    return identity


OptionalIdentity = Annotated[Identity | None, Depends(optional_identity)]


async def require_identity(request: Request, identity: OptionalIdentity) -> Identity:
    """For the JSON API: a session-cookie caller changing something sends X-CSRF-Token."""
    identity = await require_page_identity(identity)
    if identity.via == "session" and request.method not in SAFE_METHODS:
        check_csrf(request, identity.session_id, request.headers.get(CSRF_HEADER))
    return identity


async def require_page_identity(identity: OptionalIdentity) -> Identity:
    """For the HTML pages, whose forms carry the CSRF token in their body (checked by the route)."""
    if identity is None:
        raise NotAuthenticated(
            "Log in first: send an API token (Authorization: Bearer …) or use the web log-in."
        )
    return identity


PageIdentity = Annotated[Identity, Depends(require_page_identity)]
CurrentIdentity = Annotated[Identity, Depends(require_identity)]


def _admin_only(identity: Identity) -> Identity:
    if not identity.is_admin:
        raise Forbidden("This is for organisers (admins) only.")
    return identity


async def require_admin(identity: CurrentIdentity) -> Identity:
    return _admin_only(identity)


async def require_page_admin(identity: PageIdentity) -> Identity:
    return _admin_only(identity)


AdminIdentity = Annotated[Identity, Depends(require_admin)]
PageAdmin = Annotated[Identity, Depends(require_page_admin)]


# --- CSRF (signed double submit) ---


def csrf_nonce(request: Request) -> tuple[str, bool]:
    """The browser's CSRF nonce, and whether it is new (and must be set as a cookie)."""
    nonce = request.cookies.get(CSRF_COOKIE)
    if nonce and 16 <= len(nonce) <= 128:
        return nonce, False
    if not hasattr(request.state, "new_csrf_nonce"):
        request.state.new_csrf_nonce = secrets.token_urlsafe(24)
    return str(request.state.new_csrf_nonce), True


def csrf_token_for(request: Request, settings: Settings, session_id: str | None) -> str:
    nonce, _new = csrf_nonce(request)
    return security.csrf_token(settings.secret_key, nonce=nonce, session_id=session_id)


def check_csrf(request: Request, session_id: str | None, presented: str | None) -> None:
    settings: Settings = request.app.state.settings
    ok = security.csrf_token_matches(
        settings.secret_key,
        presented,
        nonce=request.cookies.get(CSRF_COOKIE),
        session_id=session_id,
    )
    if not ok:
        raise Forbidden(
            "The form's security token is missing or stale; reload the page and try again."
        )


def set_csrf_cookie(request: Request, response: Response, settings: Settings) -> None:
    nonce, new = csrf_nonce(request)
    if new:
        response.set_cookie(
            CSRF_COOKIE,
            nonce,
            httponly=True,
            samesite="strict",
            secure=settings.secure_cookies,
            path="/",
        )


def set_session_cookie(response: Response, settings: Settings, session_id: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        security.sign(settings.secret_key, session_id, purpose=SESSION_PURPOSE),
        max_age=settings.session_max_age_s,
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
        path="/",
    )


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        SESSION_COOKIE, httponly=True, samesite="lax", secure=settings.secure_cookies, path="/"
    )


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"

"""Where the project's errors become HTTP: one status and one stable code per error class.

The JSON API answers ``{"detail", "code"}``. A browser asking for a page gets a page instead:
the log-in form when it is not logged in, otherwise the sentence on an error page that keeps the
caller's navigation bar (their name, log-out, the admin link).
"""

from __future__ import annotations

from http import HTTPStatus
from urllib.parse import quote

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from edc.config import Settings
from edc.errors import (
    CompetitionClosed,
    Conflict,
    EdcError,
    Forbidden,
    InvalidInput,
    InvalidTask,
    InvalidUpload,
    NotAuthenticated,
    NotFound,
    RateLimited,
    SandboxUnavailable,
    ServiceUnavailable,
    StorageFull,
    UploadTooLarge,
    UploadTooSlow,
)
from edc.portal.auth import Identity, optional_identity
from edc.portal.render import render_error
from edc.schemas import ErrorOut

# Most specific first: UploadTooLarge and UploadTooSlow are InvalidUploads.
_STATUS: list[tuple[type[EdcError], int, str]] = [
    (UploadTooLarge, 413, "too_large"),
    (UploadTooSlow, 408, "too_slow"),
    (InvalidUpload, 400, "invalid_upload"),
    (InvalidInput, 400, "invalid_input"),
    (NotAuthenticated, 401, "not_authenticated"),
    (Forbidden, 403, "forbidden"),
    (CompetitionClosed, 403, "competition_closed"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (RateLimited, 429, "rate_limited"),
    (InvalidTask, 500, "invalid_task"),
    (ServiceUnavailable, 503, "service_unavailable"),
    (SandboxUnavailable, 503, "sandbox_unavailable"),
    (StorageFull, 507, "storage_full"),
]


def status_for(exc: EdcError) -> int:
    for cls, status, _code in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def code_for(exc: EdcError) -> str:
    if isinstance(exc, InvalidUpload):
        return exc.code
    for cls, _status, code in _STATUS:
        if isinstance(exc, cls):
            return code
    return "error"


def headers_for(exc: EdcError) -> dict[str, str]:
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, NotAuthenticated):
        return {"WWW-Authenticate": "Bearer"}
    return {}


def wants_page(request: Request) -> bool:
    """A browser navigating to a page (not the API, not a script asking for JSON)."""
    if request.url.path.startswith(("/api/", "/static/")):
        return False
    return "text/html" in request.headers.get("accept", "")


async def page_viewer(request: Request, exc: Exception) -> Identity | None:
    """Who sees the error page: the caller the route already knew, else the session cookie's.

    None when that cannot be told without the database that has just failed, or at all: an
    error page must render whatever else is wrong.
    """
    if hasattr(request.state, "identity"):
        known: Identity | None = request.state.identity
        return known
    if isinstance(exc, ServiceUnavailable):
        return None
    settings: Settings = request.app.state.settings
    try:
        return await optional_identity(request, settings)
    except EdcError:
        return None


async def edc_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EdcError)
    if wants_page(request):
        if isinstance(exc, NotAuthenticated):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        return render_error(
            request,
            exc.message,
            status_for(exc),
            identity=await page_viewer(request, exc),
            headers=headers_for(exc),
        )
    body = ErrorOut(detail=exc.message, code=code_for(exc))
    return JSONResponse(body.model_dump(), status_code=status_for(exc), headers=headers_for(exc))


async def validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """Bad query or path parameters, told in one sentence like every other refusal."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()))
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    detail = "The request is invalid: " + "; ".join(problems) + "."
    return JSONResponse(ErrorOut(detail=detail, code="invalid_request").model_dump(), 422)


# Methods probed when telling a client which ones a path accepts.
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts at this path.

    Starlette's 405 names only the methods of the first route whose path matched, although
    another route at the same path may take other methods (``GET`` and ``POST`` on
    ``/api/v1/submissions``); ``Allow`` must list them all.
    """
    routes = [r for r in request.app.router.routes if not isinstance(r, Mount)]
    allowed = []
    for method in _METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in routes):
            allowed.append(method)
    return allowed


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette and FastAPI refusals (no such path, method not allowed, a body that cannot be
    parsed) in the shape of every other."""
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    headers = dict(exc.headers or {})
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
    if status == 404:
        code = "not_found"
        detail = detail or f"There is nothing at {request.url.path}."
    elif status == 405:
        code = "method_not_allowed"
        allowed = allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
        permitted = headers.get("Allow")
        detail = detail or (
            f"{request.method} is not allowed at {request.url.path}"
            + (f"; use {permitted}." if permitted else ".")
        )
    else:
        code = phrase.lower().replace(" ", "_").replace("-", "_")
        detail = detail or f"{phrase}."
    if wants_page(request):
        viewer = await page_viewer(request, exc)
        return render_error(request, detail, status, identity=viewer, headers=headers)
    return JSONResponse(ErrorOut(detail=detail, code=code).model_dump(), status, headers)

"""Where the project's errors become HTTP: one status and one stable code per error class.

The JSON API answers ``{"detail", "code"}``. A browser asking for a page gets a page instead:
the log-in form when it is not logged in, otherwise the sentence on an error page.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response

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
)
from edc.schemas import ErrorOut

# Most specific first: UploadTooLarge is an InvalidUpload.
_STATUS: list[tuple[type[EdcError], int, str]] = [
    (UploadTooLarge, 413, "too_large"),
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


async def edc_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EdcError)
    if wants_page(request):
        if isinstance(exc, NotAuthenticated):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        templates = request.app.state.templates
        return templates.TemplateResponse(  # type: ignore[no-any-return]
            request,
            "error.html",
            {"message": exc.message, "status": status_for(exc)},
            status_code=status_for(exc),
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

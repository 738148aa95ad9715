"""Where the project's errors become HTTP: one status and one stable code per error class."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from edc.errors import (
    EdcError,
    InvalidUpload,
    NotFound,
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
    (NotFound, 404, "not_found"),
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


async def edc_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EdcError)
    body = ErrorOut(detail=exc.message, code=code_for(exc))
    return JSONResponse(body.model_dump(), status_code=status_for(exc))


async def validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """Bad query or path parameters, told in one sentence like every other refusal."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()))
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    detail = "The request is invalid: " + "; ".join(problems) + "."
    return JSONResponse(ErrorOut(detail=detail, code="invalid_request").model_dump(), 422)

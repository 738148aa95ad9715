"""The HTML pages: the submissions table and the upload form."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from edc import db, submissions
from edc.config import Settings
from edc.errors import EdcError
from edc.portal.deps import SettingsDep, TemplatesDep
from edc.portal.errors import status_for
from edc.portal.upload import receive_submission

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50


@router.get("/", response_class=HTMLResponse, name="index")
async def index(
    request: Request,
    settings: SettingsDep,
    templates: TemplatesDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    submitted: int | None = None,
) -> Response:
    context = await run_in_threadpool(_page_context, settings, offset)
    context["submitted"] = submitted
    return templates.TemplateResponse(request, "index.html", context)


@router.post("/submit", name="submit")
async def submit(request: Request, settings: SettingsDep, templates: TemplatesDep) -> Response:
    """The upload form: back to the list on success, the same page with the reason on refusal."""
    try:
        submission = await receive_submission(request, settings)
    except EdcError as exc:
        context = await run_in_threadpool(_page_context, settings, 0)
        context["error"] = exc.message
        return templates.TemplateResponse(
            request, "index.html", context, status_code=status_for(exc)
        )
    url = request.url_for("index").include_query_params(submitted=submission.id)
    return RedirectResponse(url.path + "?" + url.query, status_code=303)


def _page_context(settings: Settings, offset: int) -> dict[str, Any]:
    with submissions.database_errors(), db.session_scope(settings) as session:
        rows, total = submissions.list_submissions(session, limit=PAGE_SIZE, offset=offset)
    return {
        "submissions": rows,
        "total": total,
        "offset": offset,
        "page_size": PAGE_SIZE,
        "max_upload_mb": settings.max_upload_mb,
        "error": None,
    }

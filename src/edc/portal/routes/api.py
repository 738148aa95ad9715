"""The JSON API, version 1."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from edc import submissions
from edc.portal.deps import SessionDep, SettingsDep
from edc.portal.upload import UPLOAD_OPENAPI, receive_submission
from edc.schemas import ErrorOut, Page, SubmissionCreated, SubmissionOut

router = APIRouter(tags=["submissions"])

MAX_PAGE_SIZE = 100

_REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The archive is refused; `detail` says why."},
    413: {"model": ErrorOut, "description": "The upload is over the size limit."},
    503: {"model": ErrorOut, "description": "The database does not answer."},
    507: {"model": ErrorOut, "description": "The upload disk is full."},
}


@router.post(
    "/submissions",
    status_code=201,
    response_model=SubmissionCreated,
    responses=_REFUSALS,
    openapi_extra=UPLOAD_OPENAPI,
)
async def create_submission(request: Request, settings: SettingsDep) -> SubmissionCreated:
    """Upload a zip (multipart field `file`); it is checked, stored and queued for evaluation."""
    submission = await receive_submission(request, settings)
    return SubmissionCreated.model_validate(submission)


@router.get(
    "/submissions/{submission_id}",
    response_model=SubmissionOut,
    responses={404: {"model": ErrorOut, "description": "No such submission."}},
)
def read_submission(submission_id: int, session: SessionDep) -> SubmissionOut:
    return SubmissionOut.model_validate(
        submissions.get_submission(session, submission_id=submission_id)
    )


@router.get("/submissions", response_model=Page)
def list_submissions(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page:
    """Submissions, newest first."""
    rows, total = submissions.list_submissions(session, limit=limit, offset=offset)
    return Page(
        items=[SubmissionOut.model_validate(row) for row in rows],
        total=total,
        limit=limit,
        offset=offset,
    )

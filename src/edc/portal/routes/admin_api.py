"""The organisers' API: a submission with its audit record; rerun, cancel, disqualify, restore,
clear a review flag, baselines; queue, workers, final rankings, exports.

Every submission it returns is an :class:`~edc.schemas.AdminSubmissionOut` (with ``audit``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, StreamingResponse

from edc.portal.auth import AdminIdentity
from edc.portal.deps import MAX_ROW_ID, SessionDep, SettingsDep, SubmissionId
from edc.portal.views import admin_submission_out, final_board_for, final_out, queue_out
from edc.scheduler import fleet
from edc.schemas import (
    AdminSubmissionOut,
    BaselineIn,
    DisqualifyIn,
    ErrorOut,
    FinalIn,
    FinalOut,
    QueueOut,
    WorkerOut,
)
from edc.services import board_cache, finals, leaderboard, moderation

router = APIRouter(prefix="/admin", tags=["admin"])

_ADMIN: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No valid API token or session."},
    403: {"model": ErrorOut, "description": "Not an admin."},
}
_ACTION: dict[int | str, dict[str, Any]] = {
    **_ADMIN,
    404: {"model": ErrorOut, "description": "No such submission."},
    409: {"model": ErrorOut, "description": "Not in a state the action applies to."},
}


def _fresh(session: SessionDep, submission_id: int) -> AdminSubmissionOut:
    session.expire_all()
    return admin_submission_out(session, moderation.existing(session, submission_id))


@router.get(
    "/submissions/{submission_id}",
    response_model=AdminSubmissionOut,
    responses={**_ADMIN, 404: _ACTION[404]},
)
def read_submission(
    submission_id: SubmissionId, session: SessionDep, _admin: AdminIdentity
) -> AdminSubmissionOut:
    """Any submission, with its audit record (what replays its hidden evaluation)."""
    return admin_submission_out(session, moderation.existing(session, submission_id))


@router.post(
    "/submissions/{submission_id}/rerun", response_model=AdminSubmissionOut, responses=_ACTION
)
def rerun(
    submission_id: SubmissionId, settings: SettingsDep, session: SessionDep, _admin: AdminIdentity
) -> AdminSubmissionOut:
    """Evaluate a finished submission again, as a new attempt (the window does not apply)."""
    moderation.rerun(settings, submission_id=submission_id)
    return _fresh(session, submission_id)


@router.post(
    "/submissions/{submission_id}/cancel", response_model=AdminSubmissionOut, responses=_ACTION
)
def cancel(
    submission_id: SubmissionId, settings: SettingsDep, session: SessionDep, who: AdminIdentity
) -> AdminSubmissionOut:
    """Cancel a queued (taken off the queue) or running (its worker stops) submission."""
    moderation.cancel(settings, submission_id=submission_id, by_name=who.name, by_admin=True)
    return _fresh(session, submission_id)


@router.post(
    "/submissions/{submission_id}/disqualify", response_model=AdminSubmissionOut, responses=_ACTION
)
def disqualify(
    submission_id: SubmissionId, body: DisqualifyIn, session: SessionDep, _admin: AdminIdentity
) -> AdminSubmissionOut:
    """Keep the submission off the leaderboard (the reason is shown to its owner)."""
    row = moderation.set_disqualified(
        session, submission_id=submission_id, disqualified=True, reason=body.reason
    )
    return admin_submission_out(session, row)


@router.post(
    "/submissions/{submission_id}/restore", response_model=AdminSubmissionOut, responses=_ACTION
)
def restore(
    submission_id: SubmissionId, session: SessionDep, _admin: AdminIdentity
) -> AdminSubmissionOut:
    """Undo a disqualification."""
    row = moderation.set_disqualified(session, submission_id=submission_id, disqualified=False)
    return admin_submission_out(session, row)


@router.post(
    "/submissions/{submission_id}/clear-review",
    response_model=AdminSubmissionOut,
    responses=_ACTION,
)
def clear_review(
    submission_id: SubmissionId, session: SessionDep, _admin: AdminIdentity
) -> AdminSubmissionOut:
    """Accept a result flagged as faster than the task's physical floor: it stays ranked,
    unmarked. (To reject it, disqualify the submission.) 409 when it is not flagged."""
    row = moderation.clear_review(session, submission_id=submission_id)
    return admin_submission_out(session, row)


@router.post(
    "/submissions/{submission_id}/baseline", response_model=AdminSubmissionOut, responses=_ACTION
)
def baseline(
    submission_id: SubmissionId, body: BaselineIn, session: SessionDep, _admin: AdminIdentity
) -> AdminSubmissionOut:
    """Mark (or unmark) a submission as a baseline: shown apart on the leaderboard, unranked."""
    row = moderation.set_baseline(session, submission_id=submission_id, baseline=body.baseline)
    return admin_submission_out(session, row)


@router.get("/queue", response_model=QueueOut, responses=_ADMIN)
def read_queue(session: SessionDep, _admin: AdminIdentity) -> QueueOut:
    """How many wait, each one's position, and what is being evaluated."""
    return queue_out(session)


@router.get("/workers", response_model=list[WorkerOut], responses=_ADMIN)
def read_workers(settings: SettingsDep, _admin: AdminIdentity) -> list[WorkerOut]:
    """The workers registered on the queue: alive or not, busy with what, since when."""
    return [WorkerOut.model_validate(w) for w in fleet.worker_states(settings)]


@router.get(
    "/leaderboard.csv",
    response_class=PlainTextResponse,
    responses={**_ADMIN, 200: {"content": {"text/csv": {}}}},
)
def leaderboard_csv(
    settings: SettingsDep, session: SessionDep, _admin: AdminIdentity
) -> PlainTextResponse:
    """The leaderboard as CSV (the same ranking as the page and the API)."""
    board = board_cache.current(session, leaderboard.task_ranking(settings))
    return PlainTextResponse(
        leaderboard.csv_text(board),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="leaderboard.csv"'},
    )


@router.get("/finals", response_model=list[FinalOut], responses=_ADMIN)
def read_finals(session: SessionDep, _admin: AdminIdentity) -> list[FinalOut]:
    """The latest final rankings, newest first, with their progress."""
    return [final_out(s) for s in finals.summaries(session)]


@router.post(
    "/finals",
    status_code=201,
    response_model=FinalOut,
    responses={
        **_ADMIN,
        409: {
            "model": ErrorOut,
            "description": "No entry is ranked, or another final is queued or running.",
        },
        503: {"model": ErrorOut, "description": "The job queue does not answer."},
    },
)
def start_final(
    body: FinalIn, settings: SettingsDep, session: SessionDep, who: AdminIdentity
) -> FinalOut:
    """Re-measure the top ``top_k`` entries of the provisional leaderboard ``rounds`` times each,
    interleaved on one worker; when it completes, its board is the final ranking
    (``GET /api/v1/leaderboard/final``). Re-measurements count against no participant's limits."""
    final = finals.finalize(settings, top_k=body.top_k, rounds=body.rounds, requested_by=who.name)
    return final_out(finals.summary(session, final.id))


@router.get(
    "/final-leaderboard.csv",
    response_class=PlainTextResponse,
    responses={
        **_ADMIN,
        200: {"content": {"text/csv": {}}},
        404: {"model": ErrorOut, "description": "No such final, or none completed yet."},
    },
)
def final_leaderboard_csv(
    session: SessionDep,
    _admin: AdminIdentity,
    final_id: Annotated[
        int | None,
        Query(ge=1, le=MAX_ROW_ID, description="Any final (default: the latest completed)."),
    ] = None,
) -> PlainTextResponse:
    """The final ranking as CSV, with each entry's provisional place and any failure."""
    return PlainTextResponse(
        finals.csv_text(final_board_for(session, final_id)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="final-leaderboard.csv"'},
    )


@router.get(
    "/submissions.csv",
    response_class=StreamingResponse,
    responses={**_ADMIN, 200: {"content": {"text/csv": {}}}},
)
def submissions_csv(settings: SettingsDep, _admin: AdminIdentity) -> StreamingResponse:
    """Every submission as CSV, streamed."""
    return StreamingResponse(
        moderation.submissions_csv(settings),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="submissions.csv"'},
    )

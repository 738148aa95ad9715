"""The organisers' API: a submission with its audit record; rerun, cancel, disqualify, restore,
clear a review flag, baselines; queue, workers, final rankings, exports; adding a track.

Every submission it returns is an :class:`~edc.schemas.AdminSubmissionOut` (with ``audit``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, StreamingResponse
from sqlalchemy.orm import Session

from edc.clock import aware_utc
from edc.config import Settings
from edc.errors import InvalidInput
from edc.portal.auth import AdminIdentity
from edc.portal.deps import MAX_ROW_ID, SessionDep, SettingsDep, SubmissionId
from edc.portal.routes.api import track_out
from edc.portal.views import admin_submission_out, final_board_for, final_out, queue_out
from edc.scheduler import fleet
from edc.schemas import (
    TRACK_MAX_DIR_CHARS,
    AdminSubmissionOut,
    BaselineIn,
    DisqualifyIn,
    ErrorOut,
    FinalIn,
    FinalOut,
    QueueOut,
    TrackIn,
    TrackOut,
    WorkerOut,
)
from edc.services import board_cache, finals, leaderboard, moderation, phases, tracks
from edc.services.tracks import TRACK_NAME, TrackInfo

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
        404: {"model": ErrorOut, "description": "No such track; `detail` lists the tracks."},
        409: {
            "model": ErrorOut,
            "description": "Before the track's window ends; its final is already published (it "
            "never changes); no entry is ranked; or another final of it is queued or running.",
        },
        503: {"model": ErrorOut, "description": "The database or the job queue does not answer."},
    },
)
def start_final(
    body: FinalIn, settings: SettingsDep, session: SessionDep, who: AdminIdentity
) -> FinalOut:
    """Open the final phase of ``track`` (default: the default track) at or after its window's
    end, as ``edc admin finalize --track`` and ``edc track final`` do: its uploads close, and the
    top ``top_k`` entries of its provisional leaderboard are re-measured ``rounds`` times each,
    interleaved on one worker. When every measurement is in, the track's final leaderboard is
    published (``GET /api/v1/tracks/{name}/leaderboard/final``) and never changes. Asked again
    before then, it retries a final that failed or was lost. Re-measurements count against no
    participant's limits."""
    final = phases.open_final(
        settings, body.track, top_k=body.top_k, rounds=body.rounds, requested_by=who.name
    )
    return final_out(finals.summary(session, final.id))


@router.get(
    "/final-leaderboard.csv",
    response_class=PlainTextResponse,
    responses={
        **_ADMIN,
        200: {"content": {"text/csv": {}}},
        404: {
            "model": ErrorOut,
            "description": "No such track or final, or none of the track completed yet.",
        },
    },
)
def final_leaderboard_csv(
    settings: SettingsDep,
    session: SessionDep,
    _admin: AdminIdentity,
    final_id: Annotated[
        int | None,
        Query(ge=1, le=MAX_ROW_ID, description="Any final (default: the latest completed)."),
    ] = None,
    track: Annotated[
        str | None,
        Query(
            pattern=TRACK_NAME.pattern,
            description="A track: its latest completed final, or its final `final_id` "
            "(default: any final, else the default track's latest).",
        ),
    ] = None,
) -> PlainTextResponse:
    """The final ranking as CSV, with each entry's provisional place and any failure."""
    chosen = tracks.get_track(session, settings, track) if track is not None else None
    return PlainTextResponse(
        finals.csv_text(final_board_for(session, final_id, chosen)),
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


@router.post(
    "/tracks",
    status_code=201,
    response_model=TrackOut,
    responses={
        **_ADMIN,
        400: {
            "model": ErrorOut,
            "description": "An unusable name, window, limit or task directory (not a task).",
        },
        409: {"model": ErrorOut, "description": "There is already a track of that name."},
    },
)
def create_track(
    body: TrackIn, settings: SettingsDep, session: SessionDep, _admin: AdminIdentity
) -> TrackOut:
    """Register the task directory ``task_dir`` (on the portal's host) as the track ``name``, with
    its own upload window and limits per participant where given (else the platform's), as
    ``edc track add`` does. The directory must load as a task."""
    track = register_track(
        session,
        settings,
        name=body.name,
        task_dir=body.task_dir,
        opens_at=body.opens_at,
        closes_at=body.closes_at,
        submissions_per_day=body.submissions_per_day,
        max_queued_per_user=body.max_queued_per_user,
    )
    return track_out(track, settings)


def register_track(
    session: Session,
    settings: Settings,
    *,
    name: str,
    task_dir: str,
    opens_at: datetime | None,
    closes_at: datetime | None,
    submissions_per_day: int | None,
    max_queued_per_user: int | None,
) -> TrackInfo:
    """Add a track as an organiser asked on the page or the API (a refusal is InvalidInput or
    Conflict, theirs to fix). Times without a zone are UTC."""
    if not task_dir.strip():
        raise InvalidInput("Give the track's task directory.")
    if len(task_dir) > TRACK_MAX_DIR_CHARS:
        raise InvalidInput(f"A task directory is at most {TRACK_MAX_DIR_CHARS} characters.")
    # Relative to the portal's working directory would surprise whoever typed it elsewhere.
    if not Path(task_dir).is_absolute():
        raise InvalidInput(f"The task directory must be an absolute path, not {task_dir!r}.")
    return tracks.add_track(
        session,
        settings,
        name=name,
        task_dir=Path(task_dir),
        opens_at=_utc(opens_at),
        closes_at=_utc(closes_at),
        submissions_per_day=submissions_per_day,
        max_queued_per_user=max_queued_per_user,
    )


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    try:
        return aware_utc(moment)
    except OverflowError:  # 0001-01-01 east of UTC, say: before the first representable time
        raise InvalidInput(f"The time {moment.isoformat()} is out of range.") from None

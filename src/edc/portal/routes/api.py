"""The JSON API, version 1: submissions (the caller's own), live events, the leaderboard, tokens."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from edc import db, storage
from edc.archive import ArchiveLimits
from edc.config import Settings
from edc.db import database_errors
from edc.errors import NotFound
from edc.models import Final, User, utcnow
from edc.portal.auth import CurrentIdentity, client_address
from edc.portal.deps import MAX_ROW_ID, Offset, SessionDep, SettingsDep, SubmissionId
from edc.portal.events import StreamHub, snapshot
from edc.portal.login_gate import LoginGate
from edc.portal.upload import UPLOAD_OPENAPI, receive_submission
from edc.portal.views import submission_out, submissions_out, visible_submission
from edc.schemas import (
    CompetitionOut,
    ErrorOut,
    FinalEntryOut,
    FinalInfoOut,
    FinalLeaderboardOut,
    FinalUnrankedOut,
    LeaderboardEntryOut,
    LeaderboardOut,
    MeOut,
    Page,
    RecordOut,
    SubmissionCreated,
    SubmissionLogs,
    SubmissionOut,
    TokenIssued,
    TokenRequest,
    TrackOut,
    UploadLimitsOut,
    UsageOut,
    UserOut,
)
from edc.services import (
    accounts,
    board_cache,
    finals,
    leaderboard,
    moderation,
    rules,
    submissions,
    tracks,
)
from edc.services.tracks import TRACK_NAME
from edc.status import FinalStatus

router = APIRouter()

MAX_PAGE_SIZE = 100

_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No valid API token or session."},
}
_MINE: dict[int | str, dict[str, Any]] = {
    **_AUTH,
    404: {"model": ErrorOut, "description": "No such submission, or not yours."},
}
_REFUSALS: dict[int | str, dict[str, Any]] = {
    **_AUTH,
    400: {"model": ErrorOut, "description": "The archive is refused; `detail` says why."},
    403: {"model": ErrorOut, "description": "Outside the competition window."},
    404: {"model": ErrorOut, "description": "No such track; `detail` lists the tracks."},
    408: {"model": ErrorOut, "description": "The body came too slowly and was cut off."},
    413: {"model": ErrorOut, "description": "The upload is over the size limit."},
    429: {
        "model": ErrorOut,
        "description": "Over a submission limit, or too many uploads in progress at once; "
        "`Retry-After` and `detail` say when to retry.",
    },
    503: {"model": ErrorOut, "description": "The database does not answer."},
    507: {"model": ErrorOut, "description": "The upload disk is full."},
}


@router.post(
    "/submissions",
    status_code=201,
    response_model=SubmissionCreated,
    responses=_REFUSALS,
    openapi_extra=UPLOAD_OPENAPI,
    tags=["submissions"],
)
async def create_submission(
    request: Request, settings: SettingsDep, identity: CurrentIdentity
) -> SubmissionCreated:
    """Upload a zip (multipart field `file`); it is checked, stored and queued for evaluation."""
    submission = await receive_submission(
        request, settings, owner_id=identity.user_id, slots=request.app.state.upload_slots
    )
    return SubmissionCreated.model_validate(submission)


@router.get("/upload-limits", response_model=UploadLimitsOut, tags=["submissions"])
def read_upload_limits(settings: SettingsDep) -> UploadLimitsOut:
    """The limits an upload is checked against (public), so a client can refuse an archive
    before sending it: the same numbers, the same checks."""
    archive = ArchiveLimits.from_settings(settings)
    return UploadLimitsOut(
        max_upload_bytes=settings.max_upload_bytes,
        max_archive_entries=archive.max_entries,
        max_unpacked_bytes=archive.max_unpacked_bytes,
        max_compression_ratio=archive.max_compression_ratio,
    )


@router.get(
    "/submissions/{submission_id}",
    response_model=SubmissionOut,
    responses=_MINE,
    tags=["submissions"],
)
def read_submission(
    submission_id: SubmissionId, session: SessionDep, identity: CurrentIdentity
) -> SubmissionOut:
    return submission_out(session, visible_submission(session, submission_id, identity))


@router.get("/submissions", response_model=Page, responses=_AUTH, tags=["submissions"])
def list_submissions(
    session: SessionDep,
    identity: CurrentIdentity,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    offset: Offset = 0,
    everyone: Annotated[bool, Query(description="Admins: every participant's.")] = False,
) -> Page:
    """Your submissions, newest first."""
    owner_id = None if everyone and identity.is_admin else identity.user_id
    rows, total = submissions.list_submissions(
        session, limit=limit, offset=offset, owner_id=owner_id
    )
    return Page(items=submissions_out(session, rows), total=total, limit=limit, offset=offset)


@router.get(
    "/submissions/{submission_id}/events",
    responses={
        **_MINE,
        200: {
            "content": {"text/event-stream": {}},
            "description": "`submission` events (the submission as JSON) while it moves, then "
            "one `end` event after its final state.",
        },
        429: {
            "model": ErrorOut,
            "description": "Too many live views open (yours, or the portal's); see Retry-After.",
        },
    },
    tags=["submissions"],
)
async def submission_events(
    submission_id: SubmissionId, request: Request, settings: SettingsDep, identity: CurrentIdentity
) -> StreamingResponse:
    """Server-sent events: the submission each time its status, queue position or result changes."""
    hub: StreamHub = request.app.state.streams
    hub.check_room(identity)  # refused before the submission is read
    # Refused with 404 before the stream starts, like the other reads.
    await run_in_threadpool(snapshot, settings, submission_id, identity)
    stream = hub.stream(identity, submission_id, is_disconnected=request.is_disconnected)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/submissions/{submission_id}/logs",
    response_model=SubmissionLogs,
    responses=_MINE,
    tags=["submissions"],
)
def read_logs(
    submission_id: SubmissionId, session: SessionDep, identity: CurrentIdentity
) -> SubmissionLogs:
    """The logs you may read: the public-prompt run's; admins also get the full logs."""
    row = visible_submission(session, submission_id, identity)
    return SubmissionLogs(
        id=row.id, public_logs=row.public_logs, logs=row.logs if identity.is_admin else None
    )


@router.get(
    "/submissions/{submission_id}/archive",
    response_class=FileResponse,
    responses=_MINE,
    tags=["submissions"],
)
def download_archive(
    submission_id: SubmissionId,
    settings: SettingsDep,
    session: SessionDep,
    identity: CurrentIdentity,
) -> FileResponse:
    """The uploaded zip, to its owner and to admins."""
    row = visible_submission(session, submission_id, identity)
    path = storage.path_for(settings, row.file_path)
    if not path.is_file():
        raise NotFound(f"The archive of submission {submission_id} is gone.")
    return FileResponse(path, media_type="application/zip", filename=row.original_filename)


@router.post(
    "/submissions/{submission_id}/cancel",
    response_model=SubmissionOut,
    responses={**_MINE, 409: {"model": ErrorOut, "description": "Already finished."}},
    tags=["submissions"],
)
def cancel_submission(
    submission_id: SubmissionId,
    settings: SettingsDep,
    session: SessionDep,
    identity: CurrentIdentity,
) -> SubmissionOut:
    """Cancel your queued or running submission (it does not count against your limits)."""
    visible_submission(session, submission_id, identity)
    session.commit()  # the cancel runs in its own transaction; read its outcome afresh after
    moderation.cancel(
        settings, submission_id=submission_id, by_name=identity.name, by_admin=identity.is_admin
    )
    session.expire_all()
    return submission_out(session, visible_submission(session, submission_id, identity))


@router.get(
    "/me",
    response_model=MeOut,
    responses={**_AUTH, 404: {"model": ErrorOut, "description": "No such track."}},
    tags=["account"],
)
def me(
    settings: SettingsDep,
    session: SessionDep,
    identity: CurrentIdentity,
    track: Annotated[
        str | None,
        Query(pattern=TRACK_NAME.pattern, description="A track (default: the default one)."),
    ] = None,
) -> MeOut:
    """Who you are, where you stand against a track's limits, and whether its uploads are
    open."""
    now = utcnow()
    user = session.get(User, identity.user_id)
    assert user is not None
    chosen = tracks.get_track(session, settings, track)
    state = rules.usage(
        session, chosen.limits(settings), user_id=user.id, now=now, track=chosen.name
    )
    window = chosen.window(settings)
    return MeOut(
        user=UserOut.model_validate(user),
        track=chosen.name,
        usage=UsageOut(**dataclasses.asdict(state)),
        competition=CompetitionOut(
            start=window.start,
            end=window.end,
            open=window.is_open(now),
            message=window.describe(now),
        ),
    )


@router.post(
    "/tokens",
    status_code=201,
    response_model=TokenIssued,
    responses={
        401: {"model": ErrorOut, "description": "Wrong user name or password."},
        429: {"model": ErrorOut, "description": "Too many failed log-ins; see Retry-After."},
    },
    tags=["account"],
)
async def issue_token(body: TokenRequest, request: Request, settings: SettingsDep) -> TokenIssued:
    """Log in with name and password and get a new API token (shown once) for the CLI."""
    address = client_address(request)
    # A blocked guesser is answered here, on the event loop: it takes no thread, no database.
    accounts.refuse_if_blocked(settings, name=body.name, client_address=address)

    def issue() -> TokenIssued:
        logged_in = accounts.log_in(
            settings, name=body.name, password=body.password, client_address=address
        )
        with database_errors(), db.session_scope(settings) as session:
            user = session.get(User, logged_in.id)
            assert user is not None
            token = accounts.issue_api_token(session, user=user, label=body.label)
            return TokenIssued(token=token, user=UserOut.model_validate(user))

    gate: LoginGate = request.app.state.login_gate
    async with gate.admitted():
        return await run_in_threadpool(issue)


@router.get("/leaderboard", response_model=LeaderboardOut, tags=["leaderboard"])
def read_leaderboard(settings: SettingsDep, session: SessionDep) -> Response:
    """The default track's leaderboard: each participant's best correct submission, ranked by
    the task's score (public)."""
    return _board_response(session, leaderboard.task_ranking(settings))


@router.get("/tracks", response_model=list[TrackOut], tags=["tracks"])
def read_tracks(settings: SettingsDep, session: SessionDep) -> list[TrackOut]:
    """The platform's tracks, the default first (public)."""
    return [track_out(track, settings) for track in tracks.list_tracks(session, settings)]


@router.get(
    "/tracks/{name}/leaderboard",
    response_model=LeaderboardOut,
    responses={404: {"model": ErrorOut, "description": "No such track."}},
    tags=["leaderboard"],
)
def read_track_leaderboard(name: str, settings: SettingsDep, session: SessionDep) -> Response:
    """One track's leaderboard (public)."""
    return _board_response(session, tracks.get_track(session, settings, name).ranking())


def _board_response(session: Session, ranking: leaderboard.Ranking) -> Response:
    body = board_cache.rendered(
        session, ranking, lambda board: leaderboard_out(board).model_dump_json().encode()
    )
    return Response(body, media_type="application/json")


def track_out(track: tracks.TrackInfo, settings: Settings) -> TrackOut:
    task = track.task()
    window = track.window(settings)
    return TrackOut(
        name=track.name,
        opens_at=window.start,
        closes_at=window.end,
        phase="final" if track.phase == "final" else "development",
        task=task.name,
        task_version=task.version,
        description=task.description,
        hardware_class=task.hardware.kind,
        metric=task.ranking.metric,
        direction=task.ranking.direction,
        is_default=track.is_default,
    )


@router.get(
    "/leaderboard/final",
    response_model=FinalLeaderboardOut,
    responses={404: {"model": ErrorOut, "description": "No final ranking is published yet."}},
    tags=["leaderboard"],
)
def read_final_leaderboard(
    session: SessionDep,
    final_id: Annotated[
        int | None,
        Query(ge=1, le=MAX_ROW_ID, description="A completed final (default: the latest)."),
    ] = None,
) -> FinalLeaderboardOut:
    """The default track's final ranking (public): its provisional leaderboard's top entries
    re-measured side by side, each scored by the median of its re-measurements, ranked with
    intervals and ties. ``final_id`` may name any completed final."""
    board = published_final(session, final_id)
    if board is None:
        raise NotFound("No final ranking has been published yet.")
    return final_board_out(board)


@router.get(
    "/tracks/{name}/leaderboard/final",
    response_model=FinalLeaderboardOut,
    responses={
        404: {
            "model": ErrorOut,
            "description": "No such track (`detail` lists the tracks), or no final ranking of "
            "it is published yet.",
        }
    },
    tags=["leaderboard"],
)
def read_track_final_leaderboard(
    name: str,
    settings: SettingsDep,
    session: SessionDep,
    final_id: Annotated[
        int | None,
        Query(
            ge=1, le=MAX_ROW_ID, description="A completed final of the track (default: its latest)."
        ),
    ] = None,
) -> FinalLeaderboardOut:
    """One track's published final ranking (public), as ``/leaderboard/final`` is the default
    track's: it never changes once published."""
    track = tracks.get_track(session, settings, name)
    board = published_final(session, final_id, track)
    if board is None:
        raise NotFound(f"No final ranking of the track {track.name!r} has been published yet.")
    return final_board_out(board)


def published_final(
    session: Session, final_id: int | None, track: tracks.TrackInfo | None = None
) -> finals.FinalBoard | None:
    """The latest completed final's board of ``track`` (None: the default track), or the
    completed final ``final_id``'s (given a track, of that track only)."""
    if final_id is None:
        return finals.latest_board(session, track=track.final_track if track else None)
    final = session.get(Final, final_id)
    if final is None or final.status is not FinalStatus.COMPLETED:
        return None
    if track is not None and final.track != track.final_track:
        return None
    return finals.board(session, final)


@router.get("/leaderboard/history", response_model=list[RecordOut], tags=["leaderboard"])
def read_history(settings: SettingsDep, session: SessionDep) -> list[RecordOut]:
    """The best score over time: every submission that beat all earlier ones (public)."""
    records = leaderboard.history(session, leaderboard.task_ranking(settings))
    return [RecordOut.model_validate(r, from_attributes=True) for r in records]


def entry_out(entry: leaderboard.Entry) -> LeaderboardEntryOut:
    return LeaderboardEntryOut(
        rank=entry.rank,
        participant=entry.participant,
        submission_id=entry.submission_id,
        score=entry.score,
        score_ci=entry.score_ci,
        statistically_tied=entry.tied_with_above,
        tpot_p50_ms=entry.tpot_p50_ms,
        ttft_p50_ms=entry.ttft_p50_ms,
        output_tokens_per_s=entry.tokens_per_s,
        submitted_at=entry.submitted_at,
        baseline=entry.is_baseline,
        flagged=entry.flagged,
        rescored_from=entry.rescored_from,
        runs=entry.runs,
    )


def final_board_out(board: finals.FinalBoard) -> FinalLeaderboardOut:
    entries = []
    for standing in board.ranked:
        assert standing.entry is not None
        entries.append(
            FinalEntryOut(
                **entry_out(standing.entry).model_dump(),
                provisional_rank=standing.provisional_rank,
                provisional_score=standing.provisional_score,
                provisional_runs=standing.provisional_runs,
            )
        )
    return FinalLeaderboardOut(
        about=FinalInfoOut.model_validate(board.final),
        metric=board.ranking.metric,
        direction=board.ranking.direction,
        entries=entries,
        unranked=[
            FinalUnrankedOut(
                participant=s.participant,
                submission_id=s.submission_id,
                provisional_rank=s.provisional_rank,
                provisional_score=s.provisional_score,
                provisional_runs=s.provisional_runs,
                measured=s.measured,
                failed=s.failed,
                out=s.out or "pending",
                failure_reason=s.failure_reason,
            )
            for s in board.unranked
        ],
        generated_at=board.generated_at,
    )


def leaderboard_out(board: leaderboard.Leaderboard) -> LeaderboardOut:
    return LeaderboardOut(
        metric=board.ranking.metric,
        direction=board.ranking.direction,
        entries=[entry_out(e) for e in board.entries],
        baselines=[entry_out(e) for e in board.baselines],
        generated_at=board.generated_at,
    )

"""The organisers' pages: queue, workers, final rankings, tracks, every submission with its
actions, CSV exports."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from edc import db
from edc.config import Settings
from edc.errors import EdcError, InvalidInput
from edc.models import utcnow
from edc.portal.auth import PageAdmin
from edc.portal.deps import MAX_ROW_ID, Offset, SubmissionId
from edc.portal.render import checked_form, form_text, render
from edc.portal.routes.admin_api import register_track
from edc.portal.views import final_board_for, final_out, queue_out, submissions_out, timings
from edc.scheduler import fleet
from edc.services import (
    board_cache,
    finals,
    leaderboard,
    moderation,
    phases,
    submissions,
    tracks,
)
from edc.services.finals import MAX_ROUNDS, MAX_TOP_K
from edc.services.rules import Limits

router = APIRouter(prefix="/admin", include_in_schema=False)

PAGE_SIZE = 50
Action = Literal[
    "rerun", "cancel", "disqualify", "restore", "clear-review", "baseline", "unbaseline"
]


@router.get("", name="admin_page")
async def admin_page(request: Request, identity: PageAdmin, offset: Offset = 0) -> Response:
    settings: Settings = request.app.state.settings

    def load() -> dict[str, Any]:
        with db.database_errors(), db.session_scope(settings) as session:
            rows, total = submissions.list_submissions(session, limit=PAGE_SIZE, offset=offset)
            context: dict[str, Any] = {
                "queue": queue_out(session),
                "submissions": submissions_out(session, rows),
                "timings": timings(rows),
                # How long the running ones have run, as of this page.
                "now": utcnow(),
                "total": total,
                "offset": offset,
                "page_size": PAGE_SIZE,
                "workers": None,
                "workers_error": None,
                "finals": [final_out(f) for f in finals.summaries(session, limit=10)],
                "final_limits": (MAX_TOP_K, MAX_ROUNDS),
                "tracks": [_track_row(t, settings) for t in tracks.list_tracks(session, settings)],
            }
        try:
            context["workers"] = fleet.worker_states(settings)
        except EdcError as exc:  # Redis down: the rest of the page is still useful
            context["workers_error"] = exc.message
        return context

    context = await run_in_threadpool(load)
    return render(request, "admin.html", context, identity=identity)


@dataclass(frozen=True)
class TrackRow:
    """One track as the admin page lists it."""

    name: str
    is_default: bool
    phase: str
    task_dir: str
    opens_at: datetime | None  # None: always open at this end
    closes_at: datetime | None
    limits: Limits  # its own, else the platform's
    task: str | None = None  # "name version"; None when its task no longer loads
    hardware_class: str | None = None
    problem: str | None = None  # why its task no longer loads


def _track_row(track: tracks.TrackInfo, settings: Settings) -> TrackRow:
    window = track.window(settings)
    row = TrackRow(
        name=track.name,
        is_default=track.is_default,
        phase=track.phase,
        task_dir=str(track.task_dir),
        opens_at=window.start,
        closes_at=window.end,
        limits=track.limits(settings),
    )
    try:
        task = track.task()
    except EdcError as exc:  # its folder changed since it was added: list the track anyway
        return dataclasses.replace(row, problem=exc.message)
    return dataclasses.replace(
        row, task=f"{task.name} {task.version}", hardware_class=task.hardware.kind
    )


@router.post("/submissions/{submission_id}/{action}", name="admin_action")
async def admin_action(
    submission_id: SubmissionId, action: Action, request: Request, identity: PageAdmin
) -> Response:
    settings: Settings = request.app.state.settings
    form = await checked_form(request, identity)

    def run() -> None:
        if action == "rerun":
            moderation.rerun(settings, submission_id=submission_id)
        elif action == "cancel":
            moderation.cancel(
                settings, submission_id=submission_id, by_name=identity.name, by_admin=True
            )
        else:
            with db.database_errors(), db.session_scope(settings) as session:
                if action in ("disqualify", "restore"):
                    moderation.set_disqualified(
                        session,
                        submission_id=submission_id,
                        disqualified=action == "disqualify",
                        reason=form_text(form, "reason") or None,
                    )
                elif action == "clear-review":
                    moderation.clear_review(session, submission_id=submission_id)
                else:
                    moderation.set_baseline(
                        session, submission_id=submission_id, baseline=action == "baseline"
                    )

    await run_in_threadpool(run)
    back = form_text(form, "next")
    target = back if back.startswith("/") and not back.startswith("//") else "/admin"
    return RedirectResponse(target, status_code=303)


@router.post("/finals", name="admin_finalize")
async def finalize(request: Request, identity: PageAdmin) -> Response:
    """The admin page's button: open a track's final phase (see the API's POST /admin/finals);
    without a ``track`` field, the default track's."""
    settings: Settings = request.app.state.settings
    form = await checked_form(request, identity)
    track = form_text(form, "track").strip() or None
    top_k = _whole_number(form_text(form, "top_k") or "10", "number of entries")
    rounds = _whole_number(form_text(form, "rounds") or "3", "number of rounds")

    def run() -> None:
        phases.open_final(settings, track, top_k=top_k, rounds=rounds, requested_by=identity.name)

    await run_in_threadpool(run)
    return RedirectResponse("/admin#finals", status_code=303)


def _whole_number(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InvalidInput(f"The {what} must be a whole number.") from None


@router.post("/tracks", name="admin_add_track")
async def add_track(request: Request, identity: PageAdmin) -> Response:
    """The admin page's form: register a task directory as a track (see the API's
    POST /admin/tracks). An empty optional field is the platform's."""
    settings: Settings = request.app.state.settings
    form = await checked_form(request, identity)
    per_day = form_text(form, "per_day").strip()
    max_waiting = form_text(form, "max_waiting").strip()
    name = form_text(form, "name").strip()
    task_dir = form_text(form, "task_dir").strip()
    opens_at = _moment(form_text(form, "opens"), "opening time")
    closes_at = _moment(form_text(form, "closes"), "closing time")
    submissions_per_day = _whole_number(per_day, "number per day") if per_day else None
    max_queued = _whole_number(max_waiting, "number waiting") if max_waiting else None

    def run() -> None:
        with db.database_errors(), db.session_scope(settings) as session:
            register_track(
                session,
                settings,
                name=name,
                task_dir=task_dir,
                opens_at=opens_at,
                closes_at=closes_at,
                submissions_per_day=submissions_per_day,
                max_queued_per_user=max_queued,
            )

    await run_in_threadpool(run)
    return RedirectResponse("/admin#tracks", status_code=303)


def _moment(text: str, what: str) -> datetime | None:
    """A datetime-local field's value (or any ISO 8601 time); None when empty. A time without a
    zone is UTC, as register_track takes it."""
    if not text.strip():
        return None
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            f"The {what} must be a date and time like 2030-01-31T12:00 (UTC), not {text!r}."
        ) from None


@router.get("/final-leaderboard.csv", name="admin_final_leaderboard_csv")
async def final_leaderboard_csv(
    request: Request,
    _identity: PageAdmin,
    final_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
) -> Response:
    settings: Settings = request.app.state.settings

    def load() -> str:
        with db.database_errors(), db.session_scope(settings) as session:
            return finals.csv_text(final_board_for(session, final_id))

    return PlainTextResponse(
        await run_in_threadpool(load),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="final-leaderboard.csv"'},
    )


@router.get("/leaderboard.csv", name="admin_leaderboard_csv")
async def leaderboard_csv(request: Request, _identity: PageAdmin) -> Response:
    settings: Settings = request.app.state.settings

    def load() -> str:
        with db.database_errors(), db.session_scope(settings) as session:
            return leaderboard.csv_text(
                board_cache.current(session, leaderboard.task_ranking(settings))
            )

    return PlainTextResponse(
        await run_in_threadpool(load),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="leaderboard.csv"'},
    )


@router.get("/submissions.csv", name="admin_submissions_csv")
async def submissions_csv(request: Request, _identity: PageAdmin) -> Response:
    settings: Settings = request.app.state.settings
    return StreamingResponse(
        moderation.submissions_csv(settings),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="submissions.csv"'},
    )

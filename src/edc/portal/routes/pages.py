"""The participant's pages: home (upload form, own submissions), a submission, the leaderboard,
the task (its description, rules and submission format)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from edc import db
from edc.config import Settings
from edc.errors import EdcError
from edc.models import utcnow
from edc.portal import presentation
from edc.portal.auth import CSRF_FIELD, Identity, OptionalIdentity, PageIdentity, check_csrf
from edc.portal.deps import Offset, SubmissionId
from edc.portal.errors import headers_for, status_for
from edc.portal.render import checked_form, render
from edc.portal.routes.api import final_board_out, leaderboard_out
from edc.portal.starter_kit import starter_kit
from edc.portal.task_facts import TaskFacts, task_facts
from edc.portal.upload import receive_submission
from edc.portal.views import (
    openable,
    submission_event,
    submissions_out,
    timings,
    visible_submission,
)
from edc.schemas import RecordOut
from edc.services import board_cache, finals, leaderboard, moderation, rules, submissions, tracks
from edc.tasks.task import Task

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
# ?track=NAME on the pages that show one track; none: the default one.
TrackName = Annotated[str | None, Query(max_length=64)]


@router.get("/", name="index")
async def index(
    request: Request,
    identity: OptionalIdentity,
    offset: Offset = 0,
) -> Response:
    settings: Settings = request.app.state.settings
    context = await run_in_threadpool(_home_context, settings, identity, offset)
    return render(request, "index.html", context, identity=identity)


@router.post("/submit", name="submit")
async def submit(request: Request, identity: PageIdentity) -> Response:
    """The upload form: on to the submission's live page, or the home page with the reason."""
    settings: Settings = request.app.state.settings

    def check_token(fields: Mapping[str, str]) -> None:
        if identity.via == "session":
            check_csrf(request, identity.session_id, fields.get(CSRF_FIELD))

    try:
        submission = await receive_submission(
            request,
            settings,
            owner_id=identity.user_id,
            slots=request.app.state.upload_slots,
            check_fields=check_token,
        )
    except EdcError as exc:
        context = await run_in_threadpool(_home_context, settings, identity, 0)
        context["error"] = exc.message
        return render(
            request,
            "index.html",
            context,
            identity=identity,
            status_code=status_for(exc),
            headers=headers_for(exc),
        )
    url = request.url_for("submission_page", submission_id=submission.id)
    return RedirectResponse(url.path, status_code=303)


def _home_context(settings: Settings, identity: Identity | None, offset: int) -> dict[str, Any]:
    context: dict[str, Any] = {
        "max_upload_mb": settings.max_upload_mb,
        "error": None,
        "submissions": [],
        "timings": {},
        "total": 0,
        "offset": offset,
        "page_size": PAGE_SIZE,
        "usages": [],
        "signup": settings.signup,
        "tracks": [],
    }
    if identity is None:
        return context
    with db.database_errors(), db.session_scope(settings) as session:
        # The upload form offers a choice only where there is one.
        offered = tracks.list_tracks(session, settings)
        context["tracks"] = [t.name for t in offered]
        rows, total = submissions.list_submissions(
            session, limit=PAGE_SIZE, offset=offset, owner_id=identity.user_id
        )
        context["submissions"] = submissions_out(session, rows)
        context["timings"] = timings(rows)
        context["total"] = total
        now = utcnow()
        # Each track counts its own allowance.
        context["usages"] = [
            (
                track.name,
                rules.usage(
                    session,
                    track.limits(settings),
                    user_id=identity.user_id,
                    now=now,
                    track=track.name,
                ),
            )
            for track in offered
        ]
    return context


@router.get("/submissions/{submission_id}", name="submission_page")
async def submission_page(
    submission_id: SubmissionId, request: Request, identity: PageIdentity
) -> Response:
    settings: Settings = request.app.state.settings

    def load() -> dict[str, Any]:
        with db.database_errors(), db.session_scope(settings) as session:
            row = visible_submission(session, submission_id, identity)
            return {
                "submission": submission_event(session, row),
                # Organisers only: the hidden run's output, and what replays it.
                "logs": row.logs if identity.is_admin else None,
                "audit": row.audit if identity.is_admin else None,
            }

    context = await run_in_threadpool(load)
    return render(request, "submission.html", context, identity=identity)


@router.post("/submissions/{submission_id}/cancel", name="cancel_page")
async def cancel(submission_id: SubmissionId, request: Request, identity: PageIdentity) -> Response:
    await checked_form(request, identity)
    settings: Settings = request.app.state.settings

    def run() -> None:
        with db.database_errors(), db.session_scope(settings) as session:
            visible_submission(session, submission_id, identity)
        moderation.cancel(
            settings,
            submission_id=submission_id,
            by_name=identity.name,
            by_admin=identity.is_admin,
        )

    await run_in_threadpool(run)
    url = request.url_for("submission_page", submission_id=submission_id)
    return RedirectResponse(url.path, status_code=303)


@router.get("/leaderboard", name="leaderboard_page")
async def leaderboard_page(
    request: Request, identity: OptionalIdentity, track: TrackName = None
) -> Response:
    """A track's leaderboard (the default track's unless ``?track=`` names another)."""
    settings: Settings = request.app.state.settings

    def load() -> dict[str, Any]:
        with db.database_errors(), db.session_scope(settings) as session:
            chosen = tracks.get_track(session, settings, track)
            ranking = chosen.ranking()
            board = board_cache.current(session, ranking)
            records = leaderboard.history(session, ranking)
            final = finals.latest_board(session, track=chosen.final_track)
            names = [t.name for t in tracks.list_tracks(session, settings)]
        shown = leaderboard_out(board)
        final_shown = final_board_out(final) if final is not None else None
        entries = [*shown.entries, *shown.baselines, *(final_shown.entries if final_shown else [])]
        return {
            "board": shown,
            "track": chosen.name,
            "tracks": names,
            "metric": presentation.metric_name(shown.metric),
            "final": final_shown,
            # Rows link to the submission pages this viewer may open, and to no others.
            "openable": openable(identity, entries),
            "history": [
                RecordOut.model_validate(r, from_attributes=True).model_dump(mode="json")
                for r in records
            ],
        }

    context = await run_in_threadpool(load)
    return render(request, "leaderboard.html", context, identity=identity)


@router.get("/starter-kit.zip", name="starter_kit")
async def starter_kit_download(request: Request, track: TrackName = None) -> Response:
    """A track's starter kit (public prompts, the model's config, the baseline, a README)."""
    settings: Settings = request.app.state.settings

    def build() -> tuple[str, bytes]:
        with db.database_errors(), db.session_scope(settings) as session:
            chosen = tracks.get_track(session, settings, track)
        task = chosen.task()
        return chosen.name, starter_kit(chosen.name, task, _track_facts(chosen, task, settings))

    name, body = await run_in_threadpool(build)
    return Response(
        body,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="starter-kit-{name}.zip"'},
    )


@router.get("/task", name="task_page")
async def task_page(
    request: Request, identity: OptionalIdentity, track: TrackName = None
) -> Response:
    """A track's task, its rules and the submission format, for anyone (nothing hidden is on
    it); the default track's unless ``?track=`` names another."""
    settings: Settings = request.app.state.settings

    def load() -> dict[str, Any]:
        with db.database_errors(), db.session_scope(settings) as session:
            chosen = tracks.get_track(session, settings, track)
            names = [t.name for t in tracks.list_tracks(session, settings)]
        facts = _track_facts(chosen, chosen.task(), settings)
        return {"task": facts, "track": chosen.name, "tracks": names}

    context = await run_in_threadpool(load)
    return render(request, "task.html", context, identity=identity)


def _track_facts(chosen: tracks.TrackInfo, task: Task, settings: Settings) -> TaskFacts:
    """The facts of ``chosen``'s task under the track's own window and limits (where it sets
    none, the platform's): what its task page and its starter kit's README say."""
    return task_facts(
        task,
        settings,
        now=utcnow(),
        window=chosen.window(settings),
        limits=chosen.limits(settings),
    )

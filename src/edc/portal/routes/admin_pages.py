"""The organisers' pages: queue, workers, final rankings, every submission with its actions, CSV
exports."""

from __future__ import annotations

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
from edc.portal.views import final_board_for, final_out, queue_out, submissions_out, timings
from edc.scheduler import fleet
from edc.services import board_cache, finals, leaderboard, moderation, submissions
from edc.services.finals import MAX_ROUNDS, MAX_TOP_K

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
            }
        try:
            context["workers"] = fleet.worker_states(settings)
        except EdcError as exc:  # Redis down: the rest of the page is still useful
            context["workers_error"] = exc.message
        return context

    context = await run_in_threadpool(load)
    return render(request, "admin.html", context, identity=identity)


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
    """The admin page's button: start a final ranking (see the API's POST /admin/finals)."""
    settings: Settings = request.app.state.settings
    form = await checked_form(request, identity)
    top_k = _whole_number(form_text(form, "top_k") or "10", "number of entries")
    rounds = _whole_number(form_text(form, "rounds") or "3", "number of rounds")

    def run() -> None:
        with db.database_errors():
            finals.finalize(settings, top_k=top_k, rounds=rounds, requested_by=identity.name)

    await run_in_threadpool(run)
    return RedirectResponse("/admin#finals", status_code=303)


def _whole_number(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InvalidInput(f"The {what} must be a whole number.") from None


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

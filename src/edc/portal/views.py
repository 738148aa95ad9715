"""Submissions as the API and the pages show them: the row plus its owner and queue position."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from edc.errors import NotFound
from edc.models import Submission, User
from edc.portal import presentation
from edc.portal.auth import Identity
from edc.scheduler.position import queue_in_order, queue_position
from edc.schemas import (
    AdminSubmissionOut,
    Figure,
    FinalOut,
    LeaderboardEntryOut,
    Notice,
    QueueItemOut,
    QueueOut,
    SubmissionEvent,
    SubmissionOut,
)
from edc.services import finals, submissions
from edc.services.tracks import TrackInfo
from edc.status import SubmissionStatus


def submission_out(session: Session, row: Submission, *, owner: str | None = None) -> SubmissionOut:
    out = SubmissionOut.model_validate(row)
    out.queue_position = queue_position(session, row)
    if owner is None and row.user_id is not None:
        user = session.get(User, row.user_id)
        owner = user.name if user else None
    out.owner = owner
    return out


def admin_submission_out(session: Session, row: Submission) -> AdminSubmissionOut:
    """The organisers' view: the participant's, plus the audit record (never shown to them)."""
    return AdminSubmissionOut(**submission_out(session, row).model_dump(), audit=row.audit)


def submissions_out(session: Session, rows: Sequence[Submission]) -> list[SubmissionOut]:
    names = submissions.owner_names(session, rows)
    return [
        submission_out(session, row, owner=names.get(row.user_id) if row.user_id else None)
        for row in rows
    ]


def timings(rows: Sequence[Submission]) -> dict[int, str]:
    """Each row's ``queued … · ran …`` line, for the lists (the API's rows carry no queued_at)."""
    return {
        row.id: presentation.timing_text(row.queued_at, row.started_at, row.finished_at)
        for row in rows
    }


def submission_event(session: Session, row: Submission) -> SubmissionEvent:
    out = submission_out(session, row)
    shown = [
        *presentation.key_figures(row.result_metrics),
        *presentation.timing_figures(row.queued_at, row.started_at, row.finished_at),
    ]
    figures = [Figure(label=f.label, value=f.value) for f in shown]
    notices = [
        Notice(level=n.level, text=n.text)
        for n in presentation.result_notices(row.result_metrics, row.review)
    ]
    return SubmissionEvent(**out.model_dump(), figures=figures, notices=notices)


def visible_submission(session: Session, submission_id: int, viewer: Identity) -> Submission:
    """The row when ``viewer`` owns it or is an admin; NotFound otherwise (ids cannot be probed)."""
    return submissions.get_visible_submission(
        session,
        submission_id=submission_id,
        viewer_id=viewer.user_id,
        viewer_is_admin=viewer.is_admin,
    )


def openable(viewer: Identity | None, entries: Iterable[LeaderboardEntryOut]) -> set[int]:
    """The entries' submissions ``viewer`` may open (the rule of :func:`visible_submission`: their
    own, or every one for an admin), so the pages link those and no others."""
    if viewer is None:
        return set()
    return {e.submission_id for e in entries if viewer.is_admin or e.participant == viewer.name}


QUEUE_SHOWN = 200


def queue_out(session: Session) -> QueueOut:
    """The queue as admins see it: who waits in which position, and what is being evaluated."""
    waiting, length = queue_in_order(session, limit=QUEUE_SHOWN)
    names = submissions.owner_names(session, waiting)
    processing = session.scalars(
        select(Submission)
        .where(Submission.status == SubmissionStatus.PROCESSING)
        .order_by(Submission.started_at)
    ).all()
    return QueueOut(
        length=length,
        items=[
            QueueItemOut(
                position=index + 1,
                id=row.id,
                owner=names.get(row.user_id) if row.user_id else None,
                queued_at=row.queued_at,
                attempt=row.attempt,
            )
            for index, row in enumerate(waiting)
        ],
        processing=submissions_out(session, processing),
    )


def final_out(summary: finals.Summary) -> FinalOut:
    out = FinalOut.model_validate(summary.final)
    out.done, out.failed, out.planned = (
        summary.progress.done,
        summary.progress.failed,
        summary.progress.total,
    )
    return out


def final_board_for(
    session: Session, final_id: int | None, track: TrackInfo | None = None
) -> finals.FinalBoard:
    """For organisers: the board of any final (partial while it runs), or the latest completed
    one of ``track`` (None: the default track). Given a track, a final of another is not found."""
    if final_id is None:
        board = finals.latest_board(session, track=track.final_track if track else None)
        if board is None:
            of_track = f" of the track {track.name!r}" if track is not None else ""
            raise NotFound(f"No final ranking{of_track} has completed yet.")
        return board
    final = finals.existing(session, final_id)
    if track is not None and final.track != track.final_track:
        raise NotFound(f"There is no final {final_id} of the track {track.name!r}.")
    return finals.board(session, final)

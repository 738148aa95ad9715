"""A track's phases: ``development`` (uploads open, the provisional board) and ``final``.

::

    open_final(settings, "gpu", top_k=10, rounds=3, requested_by="root")
    check_uploads_to(track)       # CompetitionClosed once its final phase is open

An organiser opens a track's final phase at or after its window's end (the track's own, else the
platform's; any time when there is none). Opening it closes the track's uploads first, then starts
the re-measurement of its board's top entries (:func:`edc.services.finals.finalize`), whose
result is the track's final board, published when every measurement is in. Opening it again
retries the re-measurement when none of the track is queued, running or published (the queue was
down, say); once its final is published it is refused: a published final is never changed.

This is the one way organisers start a final: ``edc admin finalize [--track NAME]``, ``POST
/api/v1/admin/finals``, the admin page's button and ``edc track final NAME`` all call
:func:`open_final`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from edc import db
from edc.config import Settings
from edc.errors import CompetitionClosed, Conflict
from edc.models import DEFAULT_TRACK, FINAL_PHASE, Final, Track, utcnow
from edc.services import finals, leaderboard
from edc.services.tracks import TrackInfo, get_track


def check_uploads_to(track: TrackInfo) -> None:
    if track.phase == FINAL_PHASE:
        raise CompetitionClosed(
            f"The track {track.name!r} is in its final phase: uploads to it are closed."
        )


def open_final(
    settings: Settings,
    name: str | None,
    *,
    top_k: int,
    rounds: int,
    requested_by: str | None,
    now: datetime | None = None,
) -> Final:
    """Open the final phase of the track ``name`` (None: the default track) and start its
    re-measurement of ``top_k`` entries × ``rounds``.

    Raises InvalidInput for numbers out of range and NotFound (naming the tracks) for an unknown
    track, before anything changes; Conflict before the window's end; FinalPublished when the
    track's final is published; and what :func:`edc.services.finals.finalize` raises (no ranked
    entry, a final still queued or running, the queue down) once the uploads are closed.
    """
    now = now or utcnow()
    finals.check_plan(top_k=top_k, rounds=rounds)
    with db.database_errors(), db.session_scope(settings) as session:
        track = get_track(session, settings, name)
        window = track.window(settings)
        if window.end is not None and not window.has_ended(now):
            raise Conflict(
                f"The final phase opens at or after the track's end ({window.end:%Y-%m-%d %H:%M}"
                " UTC); uploads are still open until then."
            )
        finals.check_unpublished(session, track.final_track)
        row = session.scalar(select(Track).where(Track.name == track.name))
        if row is None:  # the default track of a database whose row was removed
            row = Track(name=DEFAULT_TRACK, task_dir=None)
            session.add(row)
        row.phase = FINAL_PHASE  # uploads close before the board is read
    with db.database_errors():
        with db.session_scope(settings) as session:
            board = leaderboard.compute(session, track.ranking())
        return finals.finalize(
            settings,
            top_k=top_k,
            rounds=rounds,
            hardware_class=track.hardware_class,
            requested_by=requested_by,
            board=board,
            track=track.final_track,
        )

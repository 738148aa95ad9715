"""Submissions as the platform sees them, with no HTTP in sight.

Intake order: check the competition's rules (window, the owner's limits), store the bytes,
inspect the archive, insert the row (the rules checked again under the owner's lock), commit,
and only then put the id on the queue. A refused upload leaves no row and no file. A queue that
does not answer leaves the row ``queued`` and the file kept: the database is the truth, and the
reconciler re-enqueues queued rows that no queue holds.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import AsyncIterable, Iterable
from datetime import datetime

import anyio.to_thread
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from edc import db, storage
from edc.archive import ArchiveLimits, inspect_archive
from edc.config import Settings
from edc.errors import NotAuthenticated, NotFound, ServiceUnavailable
from edc.models import Submission, User, utcnow
from edc.scheduler.producer import enqueue_submission
from edc.services import rules
from edc.services.phases import check_uploads_to
from edc.services.tracks import TrackInfo, get_track
from edc.status import SubmissionStatus

log = logging.getLogger(__name__)

MAX_FILENAME_CHARS = 255
FALLBACK_FILENAME = "submission.zip"


async def create_submission(
    settings: Settings,
    *,
    owner_id: int,
    filename: str | None,
    chunks: AsyncIterable[bytes] | Iterable[bytes],
    track: str | None = None,
) -> Submission:
    """Accept one upload from ``owner_id`` for ``track`` (None: the only or the default one);
    raises InvalidUpload (or UploadTooLarge, StorageFull) when the archive is refused,
    CompetitionClosed or RateLimited when the rules refuse it, NotFound for a track that does not
    exist.

    The rules and the track are checked before the body is read (a refused participant does not
    upload 200 MB for nothing, and costs the portal no more than a query) and again, under the
    owner's lock, as the row is inserted.
    """
    await anyio.to_thread.run_sync(_check_rules, settings, owner_id, track)
    stored = await storage.store_upload(settings, chunks)
    return await anyio.to_thread.run_sync(
        _accept_stored, settings, stored, sanitize_filename(filename), owner_id, track
    )


def _accept_stored(
    settings: Settings,
    stored: storage.StoredUpload,
    original_filename: str,
    owner_id: int,
    track: str | None,
) -> Submission:
    """Inspect the stored archive, insert its row and put it on the queue, in one call off the
    event loop: no cancellation can fall between the row's commit and the file's fate."""
    try:
        inspect_archive(stored.path, ArchiveLimits.from_settings(settings))
        submission = _insert_queued(settings, stored, original_filename, owner_id, track)
    except BaseException:
        storage.delete_upload(settings, stored.relative_path)
        raise
    try:
        route = (submission.hardware_class, submission.user_id)
        enqueue_submission(settings, submission.id, submission.attempt, route=route)
    except ServiceUnavailable as exc:
        log.warning(
            "submission %d is stored and queued in the database but not on the job queue "
            "(the reconciler will enqueue it): %s",
            submission.id,
            exc.message,
        )
    return submission


def check_rules(
    session: Session, settings: Settings, *, owner: User, now: datetime, track: TrackInfo
) -> None:
    """The track's phase, its upload window and the owner's limits in it (each the track's own,
    else the platform's); admins are bound by none of them."""
    if owner.is_admin:
        return
    check_uploads_to(track)
    rules.check_uploads_open(settings, now=now, window=track.window(settings))
    rules.check_submission_allowed(
        session, track.limits(settings), user=owner, now=now, track=track.name
    )


def _admitted(
    session: Session, settings: Settings, owner: User | None, track_name: str | None, now: datetime
) -> TrackInfo:
    """The track an upload of ``owner`` goes to, once the rules let it in."""
    if owner is None:
        raise NotAuthenticated("Your account no longer exists; log in again.")
    track = get_track(session, settings, track_name)
    check_rules(session, settings, owner=owner, now=now, track=track)
    return track


# Built once (``session.get`` builds its query at each call, and intake is the hot path).
_USER_BY_ID = select(User).where(User.id == bindparam("id"))


def _check_rules(settings: Settings, owner_id: int, track: str | None) -> None:
    with db.database_errors(), db.session_scope(settings) as session:
        owner = session.scalar(_USER_BY_ID, {"id": owner_id})
        _admitted(session, settings, owner, track, utcnow())


def _insert_queued(
    settings: Settings,
    stored: storage.StoredUpload,
    original_filename: str,
    owner_id: int,
    track_name: str | None,
) -> Submission:
    with db.database_errors(), db.session_scope(settings) as session:
        now = utcnow()
        owner = rules.hold_user(session, user_id=owner_id, now=now)
        track = _admitted(session, settings, owner, track_name, now)
        submission = Submission(
            status=SubmissionStatus.QUEUED,
            file_path=stored.relative_path,
            sha256=stored.sha256,
            size_bytes=stored.size_bytes,
            original_filename=original_filename,
            attempt=1,
            user_id=owner_id,
            created_at=now,
            queued_at=now,
            track=track.name,
            hardware_class=track.hardware_class,
        )
        session.add(submission)
    return submission


def get_submission(session: Session, *, submission_id: int) -> Submission:
    submission = session.get(Submission, submission_id)
    if submission is None:
        raise NotFound(f"There is no submission {submission_id}.")
    return submission


def get_visible_submission(
    session: Session, *, submission_id: int, viewer_id: int, viewer_is_admin: bool
) -> Submission:
    """The submission when the viewer owns it or is an admin.

    Anyone else is told it does not exist, in the same words, so ids cannot be probed.
    """
    submission = session.get(Submission, submission_id)
    if submission is None or not (viewer_is_admin or submission.user_id == viewer_id):
        raise NotFound(f"There is no submission {submission_id}.")
    return submission


def list_submissions(
    session: Session, *, limit: int, offset: int = 0, owner_id: int | None = None
) -> tuple[list[Submission], int]:
    """One page, newest first, and the total count; ``owner_id`` None lists everyone's."""
    query = select(Submission)
    count = select(func.count()).select_from(Submission)
    if owner_id is not None:
        query = query.where(Submission.user_id == owner_id)
        count = count.where(Submission.user_id == owner_id)
    rows = session.scalars(
        query.order_by(Submission.created_at.desc(), Submission.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    total = session.scalar(count) or 0
    return list(rows), total


def owner_names(session: Session, submissions: Iterable[Submission]) -> dict[int, str]:
    """User names by id for the owners of ``submissions`` (one query)."""
    ids = {s.user_id for s in submissions if s.user_id is not None}
    if not ids:
        return {}
    rows = session.execute(select(User.id, User.name).where(User.id.in_(ids)))
    return {user_id: name for user_id, name in rows}


def sanitize_filename(filename: str | None) -> str:
    """The participant's file name, safe to store and show: no folders, no invisible characters.

    Control, format (bidi overrides, zero-width) and surrogate characters are dropped; the name is
    NFC-normalised and cut to 255 characters, keeping its extension.
    """
    name = unicodedata.normalize("NFC", filename or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Cs"))
    name = " ".join(name.split())  # collapse odd whitespace to single spaces
    if name in ("", ".", ".."):
        return FALLBACK_FILENAME
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 16:
            name = stem[: MAX_FILENAME_CHARS - len(extension) - 1] + "." + extension
        else:
            name = name[:MAX_FILENAME_CHARS]
    return name


def remove_upload_debris(settings: Settings) -> int:
    """Remove partial and unreferenced upload files left by a portal that died mid-upload."""
    with db.database_errors(), db.session_scope(settings) as session:
        referenced = set(session.scalars(select(Submission.file_path)))
    return storage.remove_debris(settings, referenced=referenced)

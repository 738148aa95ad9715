"""Submissions as the platform sees them, with no HTTP in sight.

Intake order: store the bytes, inspect the archive, insert the row, commit, and only then put the
id on the queue. A refused upload leaves no row and no file. A queue that does not answer leaves
the row ``queued`` and the file kept: the database is the truth, and the reconciler re-enqueues
queued rows that no queue holds.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import AsyncIterable, Iterable, Iterator
from contextlib import contextmanager

import anyio.to_thread
from sqlalchemy import func, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from edc import db, storage
from edc.archive import ArchiveLimits, inspect_archive
from edc.config import Settings
from edc.errors import NotFound, ServiceUnavailable
from edc.models import Submission, SubmissionStatus
from edc.scheduler.queue import enqueue_submission

log = logging.getLogger(__name__)

MAX_FILENAME_CHARS = 255
FALLBACK_FILENAME = "submission.zip"


async def create_submission(
    settings: Settings,
    *,
    filename: str | None,
    chunks: AsyncIterable[bytes] | Iterable[bytes],
) -> Submission:
    """Accept one upload; raises InvalidUpload (or UploadTooLarge, StorageFull) when refused."""
    stored = await storage.store_upload(settings, chunks)
    try:
        await anyio.to_thread.run_sync(
            inspect_archive, stored.path, ArchiveLimits.from_settings(settings)
        )
        submission = await anyio.to_thread.run_sync(
            _insert_queued, settings, stored, sanitize_filename(filename)
        )
    except BaseException:
        storage.delete_upload(settings, stored.relative_path)
        raise
    try:
        await anyio.to_thread.run_sync(
            enqueue_submission, settings, submission.id, submission.attempt
        )
    except ServiceUnavailable as exc:
        log.warning(
            "submission %d is stored and queued in the database but not on the job queue "
            "(the reconciler will enqueue it): %s",
            submission.id,
            exc.message,
        )
    return submission


def _insert_queued(
    settings: Settings, stored: storage.StoredUpload, original_filename: str
) -> Submission:
    with database_errors(), db.session_scope(settings) as session:
        submission = Submission(
            status=SubmissionStatus.QUEUED,
            file_path=stored.relative_path,
            sha256=stored.sha256,
            size_bytes=stored.size_bytes,
            original_filename=original_filename,
            attempt=1,
        )
        session.add(submission)
    return submission


@contextmanager
def database_errors() -> Iterator[None]:
    """Translate a database that does not answer into ServiceUnavailable where it enters."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        # The driver's text can name hosts and users: it goes to the log, not to the user.
        log.warning("database error: %s", exc)
        raise ServiceUnavailable("The database is unreachable; try again shortly.") from exc


def get_submission(session: Session, *, submission_id: int) -> Submission:
    submission = session.get(Submission, submission_id)
    if submission is None:
        raise NotFound(f"There is no submission {submission_id}.")
    return submission


def list_submissions(
    session: Session, *, limit: int, offset: int = 0
) -> tuple[list[Submission], int]:
    """One page, newest first, and the total count."""
    rows = session.scalars(
        select(Submission)
        .order_by(Submission.created_at.desc(), Submission.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    total = session.scalar(select(func.count()).select_from(Submission)) or 0
    return list(rows), total


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
    with database_errors(), db.session_scope(settings) as session:
        referenced = set(session.scalars(select(Submission.file_path)))
    return storage.remove_debris(settings, referenced=referenced)

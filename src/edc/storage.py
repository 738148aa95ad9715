"""Upload storage under the data directory: stream in, hash as it goes, rename into place.

An upload is written to a ``.part`` file next to its final name (same filesystem, so the rename is
atomic) and only renamed once every byte is in and within the limit. Any failure deletes the part
file, so a refused or interrupted upload leaves nothing behind. Stored files are named by the
platform, never by the participant, and addressed by their path relative to the data directory.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Container, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread

from edc.config import Settings
from edc.errors import NotFound, StorageFull, UploadTooLarge

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
UPLOAD_SUFFIX = ".zip"
# Writes go to disk in batches of this size from a worker thread, so the event loop never waits
# on the disk and memory per upload stays bounded.
WRITE_BATCH_BYTES = 1024 * 1024


@dataclass(frozen=True)
class StoredUpload:
    """An upload safely on disk under its final name."""

    # Relative to the data directory (what the database row keeps).
    relative_path: str
    path: Path
    sha256: str
    size_bytes: int


class _PartFile:
    """The file being written: counts, hashes, and removes itself unless committed."""

    def __init__(self, settings: Settings) -> None:
        settings.uploads_dir.mkdir(parents=True, exist_ok=True)
        name = f"{uuid.uuid4().hex}{UPLOAD_SUFFIX}"
        self.final_path = settings.uploads_dir / name
        self.part_path = settings.uploads_dir / f"{name}{PART_SUFFIX}"
        self.limit = settings.max_upload_bytes
        self.size = 0
        self._hash = hashlib.sha256()
        with _disk_errors():
            self._file: BinaryIO = open(self.part_path, "xb")  # noqa: SIM115 - closed in finish/discard

    def count(self, chunk: bytes) -> None:
        """Refuse at the first byte over the limit, before the chunk is kept anywhere."""
        self.size += len(chunk)
        if self.size > self.limit:
            raise UploadTooLarge(self.limit)

    def write(self, data: bytes) -> None:
        with _disk_errors():
            self._file.write(data)
        self._hash.update(data)

    def commit(self) -> tuple[str, int]:
        with _disk_errors():
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self.part_path, self.final_path)
            # The rename is on disk only once its folder is: the row inserted next names the
            # file, and a power cut must not leave a row whose file is still a part file.
            _fsync_folder(self.final_path.parent)
        return self._hash.hexdigest(), self.size

    def discard(self) -> None:
        self._file.close()
        self.part_path.unlink(missing_ok=True)
        # Also the final name: a cancellation can land just after the rename.
        self.final_path.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    except OSError as exc:
        # Some filesystems cannot sync a folder (as PostgreSQL, go on without: the file is).
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(descriptor)


async def store_upload(
    settings: Settings, chunks: AsyncIterable[bytes] | Iterable[bytes]
) -> StoredUpload:
    """Write ``chunks`` to a new upload file; UploadTooLarge the moment the limit is passed."""
    part = _PartFile(settings)
    try:
        batch: list[bytes] = []
        batched = 0
        async for chunk in _as_async(chunks):
            if not chunk:
                continue
            part.count(chunk)
            batch.append(chunk)
            batched += len(chunk)
            if batched >= WRITE_BATCH_BYTES:
                await anyio.to_thread.run_sync(part.write, b"".join(batch))
                batch, batched = [], 0
        if batch:
            await anyio.to_thread.run_sync(part.write, b"".join(batch))
        sha256, size = await anyio.to_thread.run_sync(part.commit)
    except BaseException:
        part.discard()
        raise
    return StoredUpload(
        relative_path=part.final_path.relative_to(settings.data_dir).as_posix(),
        path=part.final_path,
        sha256=sha256,
        size_bytes=size,
    )


async def _as_async(chunks: AsyncIterable[bytes] | Iterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk


def path_for(settings: Settings, relative_path: str) -> Path:
    """The absolute path of a stored file; refuses anything that would leave the data directory."""
    root = settings.data_dir.resolve()
    candidate = (root / relative_path).resolve()
    if Path(relative_path).is_absolute() or not candidate.is_relative_to(root):
        raise NotFound(f"No stored upload is at {relative_path!r}.")
    return candidate


def open_upload(settings: Settings, relative_path: str) -> BinaryIO:
    path = path_for(settings, relative_path)
    try:
        return path.open("rb")
    except FileNotFoundError as exc:
        raise NotFound(f"No stored upload is at {relative_path!r}.") from exc


def delete_upload(settings: Settings, relative_path: str) -> None:
    """Remove a stored file; a file already gone is not an error."""
    path_for(settings, relative_path).unlink(missing_ok=True)


def remove_debris(settings: Settings, *, referenced: Container[str]) -> int:
    """Delete what a portal killed mid-upload left behind; returns how many files.

    That is part files, and stored uploads that no row refers to (killed between the rename and
    the insert), once older than ``stale_upload_s``: younger ones may belong to live uploads.
    ``referenced`` holds the rows' relative paths.
    """
    uploads = settings.uploads_dir
    if not uploads.is_dir():
        return 0
    cutoff = time.time() - settings.stale_upload_s
    removed = 0
    for path in uploads.iterdir():
        relative = path.relative_to(settings.data_dir).as_posix()
        is_part = path.name.endswith(PART_SUFFIX)
        if not is_part and (not path.name.endswith(UPLOAD_SUFFIX) or relative in referenced):
            continue
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # another process cleaned it first
    if removed:
        log.info("removed %d leftover upload file(s) from %s", removed, uploads)
    return removed


@contextmanager
def _disk_errors() -> Iterator[None]:
    """Translate a full disk into StorageFull where the write happens."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(
                "The upload disk is full, so nothing was kept; try again later."
            ) from exc
        raise

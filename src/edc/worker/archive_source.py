"""Where a worker gets the archive it is about to run: a shared directory, or the portal.

A worker on another host shares nothing with the portal but the services. It downloads the
archive over the portal's internal route with the worker credential into a cache under its own
data directory, named by sha256, so a file is fetched once and reused. On one machine (no
``EDC_PORTAL_URL``) the portal's file is read where it lies. Either way the bytes are checked
against the sha256 the database holds before anything is unpacked.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
from pathlib import Path

import httpx

from edc.config import Settings
from edc.errors import ArchiveUnavailable

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
PART_SUFFIX = ".part"
# A part file this old belongs to a download whose worker died; younger ones may be live.
STALE_PART_S = 3600.0
FIRST_RETRY_DELAY_S = 0.2
MAX_RETRY_DELAY_S = 5.0
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def archive_cache_dir(settings: Settings) -> Path:
    return settings.data_dir / "cache" / "archives"


def fetch_archive(settings: Settings, *, submission_id: int, file_path: str, sha256: str) -> Path:
    """A local path to the submission's archive whose bytes hash to ``sha256``.

    ``file_path`` is the row's path, relative to the portal's data directory. Raises
    ArchiveUnavailable when no verified copy can be had.
    """
    if not _SHA256.fullmatch(sha256):
        raise ArchiveUnavailable(f"Submission {submission_id} has no valid sha256 on record.")
    shared = _shared_dir(settings)
    if shared is not None:
        path = _inside(shared, file_path, submission_id)
        if path.is_file():
            if _sha256_of(path) == sha256:
                return path
            problem = f"The archive of submission {submission_id} at {path} fails its sha256 check."
            log.warning("%s", problem)
        else:
            problem = f"The archive of submission {submission_id} is not at {path}."
        if not settings.portal_url:
            raise ArchiveUnavailable(problem)
    return _cached_download(settings, submission_id=submission_id, sha256=sha256)


def _shared_dir(settings: Settings) -> Path | None:
    if settings.shared_data_dir is not None:
        return settings.shared_data_dir
    return None if settings.portal_url else settings.data_dir


def _inside(root: Path, relative_path: str, submission_id: int) -> Path:
    root = root.resolve()
    candidate = (root / relative_path).resolve()
    if Path(relative_path).is_absolute() or not candidate.is_relative_to(root):
        raise ArchiveUnavailable(f"Submission {submission_id} has an unusable file path on record.")
    return candidate


def _sha256_of(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _cached_download(settings: Settings, *, submission_id: int, sha256: str) -> Path:
    cache = archive_cache_dir(settings)
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{sha256}.zip"
    try:
        if _sha256_of(target) == sha256:
            os.utime(target)  # most recently used: last to be evicted
            log.info("submission %s: archive from the cache (%s)", submission_id, target.name)
            return target
        log.warning("submission %s: cached %s was corrupt; fetching again", submission_id, target)
        target.unlink(missing_ok=True)
    except FileNotFoundError:
        pass
    _download(settings, submission_id=submission_id, sha256=sha256, target=target)
    evict(cache, limit_bytes=settings.archive_cache_mb * 1024 * 1024, keep=target)
    return target


def _download(settings: Settings, *, submission_id: int, sha256: str, target: Path) -> None:
    """Stream the archive into a part file, check it, then rename it into place (atomic)."""
    if not settings.portal_url:
        raise ArchiveUnavailable("No portal to fetch archives from: set EDC_PORTAL_URL.")
    if not settings.worker_token:
        raise ArchiveUnavailable(
            "EDC_PORTAL_URL is set but EDC_WORKER_TOKEN is not: the portal's internal routes "
            "need the worker credential."
        )
    url = f"{settings.portal_url.rstrip('/')}/internal/v1/submissions/{submission_id}/archive"
    headers = {"Authorization": f"Bearer {settings.worker_token}"}
    # Unique per download: several workers on one host may fetch the same archive at once.
    part = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}{PART_SUFFIX}")
    deadline = time.monotonic() + settings.archive_fetch_retry_s
    delay = FIRST_RETRY_DELAY_S
    started = time.monotonic()
    try:
        with httpx.Client(timeout=TIMEOUT, headers=headers) as client:
            while True:
                try:
                    digest, size = _stream_to(client, url, part, settings.max_upload_bytes)
                    break
                except httpx.InvalidURL as exc:
                    raise ArchiveUnavailable(f"EDC_PORTAL_URL is unusable ({url}): {exc}") from exc
                except (httpx.TransportError, _PortalBusy) as exc:
                    misconfigured = isinstance(exc, httpx.UnsupportedProtocol)
                    if misconfigured or time.monotonic() + delay > deadline:
                        raise ArchiveUnavailable(
                            f"The portal did not deliver the archive of submission "
                            f"{submission_id} ({url}): {exc}"
                        ) from exc
                    log.warning(
                        "submission %s: archive download failed (%s); retrying in %.1f s",
                        submission_id,
                        exc,
                        delay,
                    )
                    time.sleep(delay)
                    delay = min(2 * delay, MAX_RETRY_DELAY_S)
        if digest != sha256:
            raise ArchiveUnavailable(
                f"The archive of submission {submission_id} from the portal does not match the "
                f"sha256 on record (got {digest[:12]}…, expected {sha256[:12]}…)."
            )
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    log.info(
        "submission %s: archive downloaded, %d bytes in %.2f s",
        submission_id,
        size,
        time.monotonic() - started,
    )


class _PortalBusy(Exception):
    """A 5xx answer: the portal (or its database) is restarting; worth another try."""


def _stream_to(client: httpx.Client, url: str, part: Path, limit_bytes: int) -> tuple[str, int]:
    """Write the response body to ``part``; returns its sha256 and size."""
    with client.stream("GET", url) as response:
        _check_status(response)
        digest = hashlib.sha256()
        size = 0
        with part.open("wb") as file:
            for chunk in response.iter_bytes(CHUNK_BYTES):
                size += len(chunk)
                if size > limit_bytes:
                    raise ArchiveUnavailable(
                        f"The portal sent more than the upload limit of {limit_bytes} bytes "
                        f"from {url}."
                    )
                digest.update(chunk)
                file.write(chunk)
            file.flush()
            os.fsync(file.fileno())
    return digest.hexdigest(), size


def _check_status(response: httpx.Response) -> None:
    status = response.status_code
    if status == 200:
        return
    if status >= 500:
        raise _PortalBusy(f"HTTP {status}")
    if status in (401, 403):
        raise ArchiveUnavailable(
            f"The portal refused this worker's credential (EDC_WORKER_TOKEN) at {response.url}."
        )
    if status == 404:
        raise ArchiveUnavailable(
            f"The portal has no archive at {response.url} (gone, or its internal routes are "
            "off because the portal has no EDC_WORKER_TOKEN)."
        )
    raise ArchiveUnavailable(f"The portal answered HTTP {status} at {response.url}.")


def evict(cache: Path, *, limit_bytes: int, keep: Path) -> int:
    """Remove least recently used archives until the cache fits ``limit_bytes``; never ``keep``.

    Also removes part files of dead downloads. Returns how many files went.
    """
    entries: list[tuple[float, int, Path]] = []
    removed = 0
    now = time.time()
    for path in cache.iterdir():
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue  # another worker of this host removed it first
        if path.name.endswith(PART_SUFFIX):
            if stat.st_mtime < now - STALE_PART_S:
                path.unlink(missing_ok=True)
                removed += 1
            continue
        entries.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= limit_bytes:
            break
        if path == keep:
            continue
        path.unlink(missing_ok=True)
        total -= size
        removed += 1
    if removed:
        log.info("archive cache: removed %d file(s); %d bytes kept", removed, total)
    return removed

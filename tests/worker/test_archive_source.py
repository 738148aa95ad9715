"""Where a worker gets its archive: the shared directory, or the portal over HTTP, cached.

The download path runs against a real portal (uvicorn on a free port) on the real database and
queue; the worker has its own data directory, as on another host.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from edc import db
from edc.config import Settings
from edc.errors import ArchiveUnavailable
from edc.models import Submission
from edc.portal.app import create_app
from edc.worker.archive_source import archive_cache_dir, fetch_archive
from tests.support.competition import bearer, make_user, zip_of
from tests.support.platform import free_port
from tests.support.threaded_server import serve_in_thread

WORKER_TOKEN = "worker-credential-for-tests"


@dataclass(frozen=True)
class Stored:
    """A submission as the worker knows it from its database read."""

    id: int
    file_path: str
    sha256: str
    payload: bytes


class LivePortal:
    """`edc portal`'s application under uvicorn in a thread, on a port chosen up front."""

    def __init__(self, settings: Settings, port: int) -> None:
        self.settings = settings
        self.url = f"http://127.0.0.1:{port}"
        self._port = port
        self._running = ExitStack()

    def start(self) -> None:
        self._running.enter_context(serve_in_thread(create_app(self.settings), port=self._port))

    def stop(self) -> None:
        self._running.close()

    def submit(self, payload: bytes) -> Stored:
        """Upload as a participant would; returns what the worker would read from the row."""
        token = make_user(self.settings, f"p{hashlib.sha256(payload).hexdigest()[:10]}")[1]
        response = httpx.post(
            f"{self.url}/api/v1/submissions",
            files={"file": ("s.zip", payload, "application/zip")},
            headers=bearer(token),
            timeout=30,
        )
        assert response.status_code == 201, response.text
        with db.session_scope(self.settings) as session:
            row = session.get(Submission, response.json()["id"])
            assert row is not None
            return Stored(row.id, row.file_path, row.sha256, payload)


def start_portal(settings: Settings, *, worker_token: str | None = WORKER_TOKEN) -> LivePortal:
    portal = LivePortal(
        settings.model_copy(
            update={
                "worker_token": worker_token,
                "max_queued_per_user": 1000,
                "submissions_per_day": 1000,
            }
        ),
        free_port(),
    )
    portal.start()
    return portal


@pytest.fixture
def portal(sqlite_settings: Settings) -> Iterator[LivePortal]:
    running = start_portal(sqlite_settings)
    yield running
    running.stop()


def worker_settings(tmp_path: Path, portal_url: str | None, **changes: object) -> Settings:
    """A worker on another host: its own data directory, the portal's URL and the credential."""
    values: dict[str, object] = {
        "data_dir": tmp_path / "worker-data",
        "portal_url": portal_url,
        "worker_token": WORKER_TOKEN,
        "archive_fetch_retry_s": 0.0,
        **changes,
    }
    return Settings(env="dev", **values)


def fetch(settings: Settings, stored: Stored) -> Path:
    return fetch_archive(
        settings, submission_id=stored.id, file_path=stored.file_path, sha256=stored.sha256
    )


def payload(tag: str, *, blob_bytes: int = 0) -> bytes:
    """A valid submission zip, distinct per tag; ``blob_bytes`` of incompressible padding."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("submission.py", f"class Decoder:\n    pass\n# {tag}\n")
        if blob_bytes:
            archive.writestr("blob.bin", os.urandom(blob_bytes), zipfile.ZIP_STORED)
    return buffer.getvalue()


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def cache_names(settings: Settings) -> list[str]:
    cache = archive_cache_dir(settings)
    return sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []


# --- one machine, or a shared directory --------------------------------------------------------


def shared_file(data_dir: Path, data: bytes) -> Stored:
    path = data_dir / "uploads" / "a.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return Stored(7, "uploads/a.zip", hashlib.sha256(data).hexdigest(), data)


def test_one_machine_reads_the_portals_file_where_it_lies(tmp_path: Path) -> None:
    settings = Settings(env="dev", data_dir=tmp_path / "data")
    stored = shared_file(settings.data_dir, zip_of())
    path = fetch(settings, stored)
    assert path == (settings.data_dir / "uploads" / "a.zip").resolve()
    assert not archive_cache_dir(settings).exists()


def test_one_machine_refuses_a_file_that_fails_its_sha256_or_is_missing(tmp_path: Path) -> None:
    settings = Settings(env="dev", data_dir=tmp_path / "data")
    stored = shared_file(settings.data_dir, zip_of())
    (settings.data_dir / stored.file_path).write_bytes(stored.payload + b"tampered")
    with pytest.raises(ArchiveUnavailable, match="sha256"):
        fetch(settings, stored)
    (settings.data_dir / stored.file_path).unlink()
    with pytest.raises(ArchiveUnavailable, match="is not at"):
        fetch(settings, stored)


def test_a_path_leaving_the_shared_directory_is_refused(tmp_path: Path) -> None:
    settings = Settings(env="dev", data_dir=tmp_path / "data")
    stored = shared_file(tmp_path, zip_of())  # lies at tmp_path/uploads, outside data_dir
    escaping = Stored(stored.id, "../uploads/a.zip", stored.sha256, stored.payload)
    with pytest.raises(ArchiveUnavailable, match="unusable file path"):
        fetch(settings, escaping)


def test_a_configured_shared_directory_is_used_before_the_portal(tmp_path: Path) -> None:
    shared = tmp_path / "portal-data-mount"
    stored = shared_file(shared, zip_of())
    # The portal is unreachable: were it asked, the fetch would fail.
    settings = worker_settings(tmp_path, closed_port_url(), shared_data_dir=shared)
    assert fetch(settings, stored) == (shared / stored.file_path).resolve()
    assert cache_names(settings) == []


def test_a_bad_sha256_on_record_is_refused_before_any_path_is_built(tmp_path: Path) -> None:
    settings = worker_settings(tmp_path, closed_port_url())
    stored = Stored(1, "uploads/a.zip", "../../etc/passwd", b"")
    with pytest.raises(ArchiveUnavailable, match="no valid sha256"):
        fetch(settings, stored)


# --- over HTTP from a real portal ----------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_on_another_host_downloads_into_its_cache(
    portal: LivePortal, tmp_path: Path
) -> None:
    stored = portal.submit(payload("download"))
    settings = worker_settings(tmp_path, portal.url)

    path = fetch(settings, stored)

    assert path == archive_cache_dir(settings) / f"{stored.sha256}.zip"
    assert path.read_bytes() == stored.payload
    assert cache_names(settings) == [f"{stored.sha256}.zip"]  # no part file left behind
    assert not (settings.data_dir / "uploads").exists()


@pytest.mark.slow
def test_a_configured_shared_directory_without_the_file_falls_back_to_the_portal(
    portal: LivePortal, tmp_path: Path
) -> None:
    stored = portal.submit(payload("fallback"))
    settings = worker_settings(tmp_path, portal.url, shared_data_dir=tmp_path / "empty-mount")
    assert fetch(settings, stored).read_bytes() == stored.payload


@pytest.mark.slow
def test_a_cached_archive_is_reused_without_asking_the_portal(
    portal: LivePortal, tmp_path: Path
) -> None:
    stored = portal.submit(payload("reuse"))
    first = fetch(worker_settings(tmp_path, portal.url), stored)
    os.utime(first, (1_000_000, 1_000_000))

    # Same worker data directory, but a portal that cannot be reached.
    offline = worker_settings(tmp_path, closed_port_url())
    assert fetch(offline, stored) == first
    assert first.stat().st_mtime > 1_000_000  # marked as recently used


@pytest.mark.slow
def test_a_corrupt_cached_archive_is_fetched_again(portal: LivePortal, tmp_path: Path) -> None:
    stored = portal.submit(payload("corrupt-cache"))
    settings = worker_settings(tmp_path, portal.url)
    path = fetch(settings, stored)
    path.write_bytes(b"bit rot")
    assert fetch(settings, stored).read_bytes() == stored.payload


@pytest.mark.slow
def test_bytes_that_do_not_match_the_database_are_deleted_and_refused(
    portal: LivePortal, tmp_path: Path
) -> None:
    stored = portal.submit(payload("mismatch"))
    # The portal's file changed under it after the row was written.
    (portal.settings.data_dir / stored.file_path).write_bytes(stored.payload + b"tampered")
    settings = worker_settings(tmp_path, portal.url)

    with pytest.raises(ArchiveUnavailable, match="does not match the sha256 on record"):
        fetch(settings, stored)
    assert cache_names(settings) == []


@pytest.mark.slow
def test_a_worker_without_the_credential_does_not_fetch(portal: LivePortal, tmp_path: Path) -> None:
    stored = portal.submit(payload("no-token"))
    settings = worker_settings(tmp_path, portal.url, worker_token=None)
    with pytest.raises(ArchiveUnavailable, match="EDC_WORKER_TOKEN is not"):
        fetch(settings, stored)
    assert cache_names(settings) == []


@pytest.mark.slow
def test_a_wrong_credential_is_refused_by_the_portal(portal: LivePortal, tmp_path: Path) -> None:
    stored = portal.submit(payload("wrong-token"))
    settings = worker_settings(tmp_path, portal.url, worker_token="guessed")
    with pytest.raises(ArchiveUnavailable, match="refused this worker's credential"):
        fetch(settings, stored)
    assert cache_names(settings) == []


@pytest.mark.slow
def test_a_portal_with_internal_routes_off_or_an_unknown_id_is_reported(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    portal = start_portal(sqlite_settings, worker_token=None)
    try:
        stored = portal.submit(payload("routes-off"))
        settings = worker_settings(tmp_path, portal.url)
        with pytest.raises(ArchiveUnavailable, match="internal routes are off"):
            fetch(settings, stored)
    finally:
        portal.stop()

    portal = start_portal(sqlite_settings)
    try:
        unknown = Stored(stored.id + 1000, stored.file_path, stored.sha256, b"")
        with pytest.raises(ArchiveUnavailable, match="no archive"):
            fetch(worker_settings(tmp_path, portal.url), unknown)
    finally:
        portal.stop()


@pytest.mark.slow
def test_a_download_waits_for_a_portal_that_is_starting(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    portal = start_portal(sqlite_settings)
    stored = portal.submit(payload("restart"))
    portal.stop()

    late = LivePortal(portal.settings, free_port())
    starter = threading.Timer(1.0, late.start)
    starter.start()
    try:
        settings = worker_settings(tmp_path, late.url, archive_fetch_retry_s=20.0)
        assert fetch(settings, stored).read_bytes() == stored.payload
    finally:
        starter.join()
        late.stop()


def test_an_unreachable_portal_gives_up_after_the_retry_window(tmp_path: Path) -> None:
    settings = worker_settings(tmp_path, closed_port_url(), archive_fetch_retry_s=0.5)
    stored = Stored(1, "uploads/a.zip", "ab" * 32, b"")
    started = time.monotonic()
    with pytest.raises(ArchiveUnavailable, match="did not deliver"):
        fetch(settings, stored)
    assert time.monotonic() - started < 10
    assert cache_names(settings) == []


def test_a_portal_url_without_a_scheme_fails_at_once(tmp_path: Path) -> None:
    settings = worker_settings(tmp_path, "127.0.0.1:1", archive_fetch_retry_s=60.0)
    stored = Stored(1, "uploads/a.zip", "ab" * 32, b"")
    started = time.monotonic()
    with pytest.raises(ArchiveUnavailable):
        fetch(settings, stored)
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_the_cache_evicts_the_least_recently_used_above_its_size(
    portal: LivePortal, tmp_path: Path
) -> None:
    # Three archives of ~0.4 MB in a 1 MB cache: only two fit.
    first, second, third = (portal.submit(payload(tag, blob_bytes=400_000)) for tag in "abc")
    settings = worker_settings(tmp_path, portal.url, archive_cache_mb=1)
    fetch(settings, first)
    time.sleep(0.02)
    fetch(settings, second)
    time.sleep(0.02)
    fetch(settings, first)  # reused: now the most recently used
    time.sleep(0.02)
    fetch(settings, third)

    assert cache_names(settings) == sorted(f"{s.sha256}.zip" for s in (first, third))

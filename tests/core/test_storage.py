"""Upload storage on a real filesystem: hashing, the streaming limit, cleanup, a full disk."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from edc import storage
from edc.config import Settings
from edc.errors import NotFound, StorageFull, UploadTooLarge

CHUNK = 256 * 1024


@pytest.fixture
def store_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", max_upload_mb=1, env="dev")


def leftovers(settings: Settings) -> list[str]:
    if not settings.uploads_dir.exists():
        return []
    return sorted(p.name for p in settings.uploads_dir.iterdir())


def test_stores_chunks_with_their_hash_and_size(store_settings: Settings) -> None:
    chunks = [os.urandom(1000), b"", os.urandom(70_000), os.urandom(5)]
    stored = anyio.run(storage.store_upload, store_settings, chunks)
    expected = b"".join(chunks)
    assert stored.size_bytes == len(expected)
    assert stored.sha256 == hashlib.sha256(expected).hexdigest()
    assert stored.path.read_bytes() == expected
    assert stored.relative_path == f"uploads/{stored.path.name}"
    assert storage.path_for(store_settings, stored.relative_path) == stored.path.resolve()
    assert leftovers(store_settings) == [stored.path.name]


def test_the_file_and_then_its_folder_are_synced_before_the_upload_is_stored(
    store_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored upload survives a power cut: its bytes, then its new name (the folder's entry),
    are on disk before the row that names it can be written."""
    synced: list[tuple[str, list[str]]] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        path = os.readlink(f"/proc/self/fd/{descriptor}")
        synced.append((path, sorted(os.listdir(path)) if os.path.isdir(path) else []))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    stored = anyio.run(storage.store_upload, store_settings, [os.urandom(1000)])
    part = f"{stored.path}{storage.PART_SUFFIX}"
    # The folder once it holds the final name, and no part file.
    assert synced == [(part, []), (str(store_settings.uploads_dir.resolve()), [stored.path.name])]


def test_stores_an_async_stream_larger_than_one_write_batch(store_settings: Settings) -> None:
    settings = store_settings.model_copy(update={"max_upload_mb": 4})
    data = os.urandom(3 * 1024 * 1024 + 17)

    async def stream() -> AsyncIterator[bytes]:
        for at in range(0, len(data), 65536):
            yield data[at : at + 65536]

    stored = anyio.run(storage.store_upload, settings, stream())
    with storage.open_upload(settings, stored.relative_path) as fp:
        assert fp.read() == data


def test_limit_is_enforced_while_streaming(store_settings: Settings) -> None:
    produced = 0

    def endless() -> Iterator[bytes]:
        nonlocal produced
        while True:
            produced += 1
            yield bytes(CHUNK)

    with pytest.raises(UploadTooLarge) as caught:
        anyio.run(storage.store_upload, store_settings, endless())
    # 1 MB is four chunks; the fifth is the first byte over, and nothing after it is read.
    assert produced == 5
    assert caught.value.message == "The upload is larger than the limit of 1 MB."
    assert leftovers(store_settings) == []


def test_exactly_the_limit_is_accepted(store_settings: Settings) -> None:
    stored = anyio.run(storage.store_upload, store_settings, [bytes(CHUNK)] * 4)
    assert stored.size_bytes == store_settings.max_upload_bytes


def test_a_failing_stream_leaves_nothing(store_settings: Settings) -> None:
    def broken() -> Iterator[bytes]:
        yield bytes(CHUNK)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        anyio.run(storage.store_upload, store_settings, broken())
    assert leftovers(store_settings) == []


@pytest.mark.parametrize("bad", ["../outside.zip", "/etc/passwd", "uploads/../../x"])
def test_paths_outside_the_data_dir_are_refused(store_settings: Settings, bad: str) -> None:
    with pytest.raises(NotFound):
        storage.path_for(store_settings, bad)
    with pytest.raises(NotFound):
        storage.delete_upload(store_settings, bad)


def test_open_and_delete(store_settings: Settings) -> None:
    stored = anyio.run(storage.store_upload, store_settings, [b"abc"])
    storage.delete_upload(store_settings, stored.relative_path)
    storage.delete_upload(store_settings, stored.relative_path)  # already gone: fine
    with pytest.raises(NotFound, match="No stored upload"):
        storage.open_upload(store_settings, stored.relative_path)


def test_stale_debris_is_removed_and_live_or_referenced_files_kept(
    store_settings: Settings,
) -> None:
    uploads = store_settings.uploads_dir
    uploads.mkdir(parents=True)
    names = ["stale.zip.part", "live.zip.part", "kept.zip", "orphan.zip", "young-orphan.zip"]
    for name in names:
        (uploads / name).write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    for name in ("stale.zip.part", "kept.zip", "orphan.zip"):
        os.utime(uploads / name, (two_hours_ago, two_hours_ago))
    assert storage.remove_debris(store_settings, referenced={"uploads/kept.zip"}) == 2
    assert leftovers(store_settings) == ["kept.zip", "live.zip.part", "young-orphan.zip"]


@pytest.fixture
def tiny_disk(store_settings: Settings) -> Iterator[Path]:
    """A 512 KB tmpfs mounted as the uploads folder, so the disk really fills up."""
    uploads = store_settings.uploads_dir
    uploads.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(uploads)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield uploads
    finally:
        subprocess.run(["umount", str(uploads)], check=True)


def test_full_disk_is_storage_full_and_leaves_nothing(
    store_settings: Settings, tiny_disk: Path
) -> None:
    with pytest.raises(StorageFull) as caught:
        anyio.run(storage.store_upload, store_settings, [bytes(CHUNK)] * 4)
    assert caught.value.message == "The upload disk is full, so nothing was kept; try again later."
    assert list(tiny_disk.iterdir()) == []

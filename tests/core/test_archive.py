"""Archive inspection and unpacking, on zips crafted byte by byte where zipfile would not."""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
import stat
import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from edc.archive import ArchiveLimits, EntryPoint, inspect_archive, unpack
from edc.errors import InvalidUpload

SMALL = ArchiveLimits(max_entries=10, max_unpacked_bytes=1024 * 1024, max_compression_ratio=50)


@dataclass
class Entry:
    name: str
    data: bytes = b"pass\n"
    mode: int = stat.S_IFREG | 0o644
    compress: int = zipfile.ZIP_DEFLATED


def build_zip(entries: list[Entry]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for entry in entries:
            info = zipfile.ZipInfo(entry.name)
            info.external_attr = entry.mode << 16
            info.create_system = 3
            info.compress_type = entry.compress
            zf.writestr(info, entry.data)
    return buffer.getvalue()


def write(tmp_path: Path, data: bytes, name: str = "upload.zip") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refused(path: Path, limits: ArchiveLimits | None = None) -> InvalidUpload:
    with pytest.raises(InvalidUpload) as caught:
        inspect_archive(path, limits)
    return caught.value


# The central directory, for crafting what zipfile refuses to write.
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_EOCD = struct.Struct("<4s4H2LH")


def split_zip(data: bytes) -> tuple[bytes, list[bytes], bytes]:
    """(local part, central records, end record) of a zip without a comment."""
    eocd = data[-_EOCD.size :]
    fields = _EOCD.unpack(eocd)
    cd_size, cd_offset = fields[5], fields[6]
    records, at = [], cd_offset
    while at < cd_offset + cd_size:
        header = _CENTRAL.unpack_from(data, at)
        length = _CENTRAL.size + header[12] + header[13] + header[14]
        records.append(data[at : at + length])
        at += length
    return data[:cd_offset], records, eocd


def join_zip(local: bytes, records: list[bytes], *, declared_entries: int | None = None) -> bytes:
    directory = b"".join(records)
    count = len(records) if declared_entries is None else declared_entries
    eocd = _EOCD.pack(b"PK\x05\x06", 0, 0, count, count, len(directory), len(local), 0)
    return local + directory + eocd


def as_zip64(data: bytes, *, declared_entries: int | None = None) -> bytes:
    """The same zip with a zip64 end record, as writers emit past 65535 entries or 4 GB."""
    local, records, _ = split_zip(data)
    directory = b"".join(records)
    count = len(records) if declared_entries is None else declared_entries
    record64 = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(directory), len(local)
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(local) + len(directory), 1)
    eocd = _EOCD.pack(b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return local + directory + record64 + locator + eocd


def with_central_field(data: bytes, index: int, field: int, value: int) -> bytes:
    """The zip with one field of one central record changed (zipfile rewrites flags itself)."""
    local, records, _ = split_zip(data)
    fields = list(_CENTRAL.unpack_from(records[index]))
    fields[field] = value
    records[index] = _CENTRAL.pack(*fields) + records[index][_CENTRAL.size :]
    return join_zip(local, records)


_FLAGS, _METHOD = 5, 6


def renamed_record(record: bytes, name: bytes) -> bytes:
    fields = list(_CENTRAL.unpack_from(record))
    old_name_len = fields[12]
    fields[12] = len(name)
    return _CENTRAL.pack(*fields) + name + record[_CENTRAL.size + old_name_len :]


# --- accepted archives ---


def test_python_entry_point_at_root(tmp_path: Path) -> None:
    path = write(tmp_path, build_zip([Entry("submission.py"), Entry("lib/util.py")]))
    info = inspect_archive(path)
    assert info.entry_point is EntryPoint.PYTHON
    assert info.top_folder == ""
    assert info.entry_count == 2
    assert info.uncompressed_bytes == 2 * len(b"pass\n")


def test_entry_point_inside_single_top_folder(tmp_path: Path) -> None:
    entries = [Entry("mine/", b"", stat.S_IFDIR | 0o755), Entry("mine/submission.py")]
    info = inspect_archive(write(tmp_path, build_zip(entries)))
    assert info.top_folder == "mine/"
    assert info.entry_point is EntryPoint.PYTHON


def test_executable_run_is_an_entry_point(tmp_path: Path) -> None:
    entries = [Entry("run", b"#!/bin/sh\nexit 0\n", stat.S_IFREG | 0o755)]
    info = inspect_archive(write(tmp_path, build_zip(entries)))
    assert info.entry_point is EntryPoint.EXECUTABLE


def test_unicode_names_are_accepted(tmp_path: Path) -> None:
    entries = [Entry("données/submission.py"), Entry("données/模型.txt", b"x")]
    info = inspect_archive(write(tmp_path, build_zip(entries)))
    assert info.top_folder == "données/"


def test_macos_metadata_folder_is_ignored(tmp_path: Path) -> None:
    entries = [
        Entry("mine/submission.py"),
        Entry("__MACOSX/mine/._submission.py", b"\x00\x05\x16\x07"),
    ]
    path = write(tmp_path, build_zip(entries))
    assert inspect_archive(path).top_folder == "mine/"
    dest = tmp_path / "run"
    unpack(path, dest)
    assert [p.name for p in dest.iterdir()] == ["submission.py"]


def test_small_compressible_files_are_not_called_bombs(tmp_path: Path) -> None:
    entries = [Entry("submission.py"), Entry("zeros.bin", bytes(60_000))]
    inspect_archive(write(tmp_path, build_zip(entries)), SMALL)


# --- refused archives: one rule each, with the sentence the user sees ---


def test_empty_upload(tmp_path: Path) -> None:
    error = refused(write(tmp_path, b""))
    assert (error.code, error.message) == ("empty", "The upload is empty.")


def test_zip_with_no_files(tmp_path: Path) -> None:
    assert refused(write(tmp_path, build_zip([]))).message == "The archive has no files in it."


def test_not_a_zip(tmp_path: Path) -> None:
    error = refused(write(tmp_path, b"just some text, not an archive\n" * 10))
    assert (error.code, error.message) == ("not_a_zip", "The upload is not a zip archive.")


def test_truncated_zip(tmp_path: Path) -> None:
    data = build_zip([Entry("submission.py", os.urandom(4000))])
    error = refused(write(tmp_path, data[: len(data) // 2]))
    assert error.code == "truncated"
    assert error.message == "The archive is truncated: its table of contents is missing."


def test_damaged_content_fails_its_checksum(tmp_path: Path) -> None:
    data = bytearray(build_zip([Entry("submission.py", b"A" * 100, compress=zipfile.ZIP_STORED)]))
    at = data.index(b"A" * 100)
    data[at : at + 10] = b"B" * 10
    error = refused(write(tmp_path, bytes(data)))
    assert error.code == "damaged"
    assert "'submission.py' cannot be read" in error.message


@pytest.mark.parametrize(
    "method",
    [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA],
    ids=["stored", "deflate", "bzip2", "lzma"],
)
def test_corrupt_compressed_data_is_damaged_for_every_method(tmp_path: Path, method: int) -> None:
    content = b"".join(b"token %d\n" % i for i in range(5000))
    data = bytearray(build_zip([Entry("submission.py", content, compress=method)]))
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode())
    middle = start + info.compress_size // 2
    data[middle : middle + 8] = bytes(b ^ 0x5A for b in data[middle : middle + 8])
    error = refused(write(tmp_path, bytes(data)))
    assert error.code == "damaged"


def test_randomly_mangled_archives_are_refused_cleanly(tmp_path: Path) -> None:
    """Whatever the bytes, the only exception is InvalidUpload, and nothing leaves the folder."""
    rng = random.Random(20261128)
    bases = [
        build_zip(
            [Entry("pkg/submission.py", b"pass\n" * 50, compress=m), Entry("pkg/w", bytes(3000))]
        )
        for m in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
    ]
    dest = tmp_path / "box" / "run"
    for _ in range(400):
        data = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            data[at] = rng.randrange(256)
        path = write(tmp_path, bytes(data))
        with contextlib.suppress(InvalidUpload):
            inspect_archive(path)
        with contextlib.suppress(InvalidUpload):
            unpack(path, dest)
        shutil.rmtree(dest, ignore_errors=True)
    assert sorted(p.name for p in (tmp_path / "box").iterdir()) == []


@pytest.mark.parametrize("name", ["../x", "a/../../x", "..\\x", "ok/../../../etc/passwd"])
def test_path_outside_the_root(tmp_path: Path, name: str) -> None:
    error = refused(write(tmp_path, build_zip([Entry("submission.py"), Entry(name)])))
    assert error.code == "path_traversal"
    assert error.message == f"The archive contains a path outside its root: {name!r}."


@pytest.mark.parametrize("name", ["/etc/passwd", "C:/Windows/x", "\\\\server\\share"])
def test_absolute_path(tmp_path: Path, name: str) -> None:
    error = refused(write(tmp_path, build_zip([Entry("submission.py"), Entry(name)])))
    assert error.code == "absolute_path"
    assert error.message == f"The archive contains an absolute path: {name!r}."


def test_symlink_entry(tmp_path: Path) -> None:
    entries = [Entry("submission.py"), Entry("passwd", b"/etc/passwd", stat.S_IFLNK | 0o777)]
    error = refused(write(tmp_path, build_zip(entries)))
    assert error.code == "symlink"
    assert error.message == "The archive contains a symbolic link: 'passwd'."


@pytest.mark.parametrize("file_type", [stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK])
def test_device_pipe_and_socket_entries(tmp_path: Path, file_type: int) -> None:
    entries = [Entry("submission.py"), Entry("dev", b"", file_type | 0o600)]
    error = refused(write(tmp_path, build_zip(entries)))
    assert error.code == "special_file"
    assert error.message == "The archive contains a device, pipe or socket entry: 'dev'."


def test_control_character_in_a_name(tmp_path: Path) -> None:
    error = refused(write(tmp_path, build_zip([Entry("submission.py"), Entry("bad\x1bname")])))
    assert error.code == "bad_filename"
    assert error.message == "The archive has a file name with a control character: 'bad\\x1bname'."


def test_name_flagged_utf8_that_is_not(tmp_path: Path) -> None:
    data = build_zip([Entry("submission.py"), Entry("aXb")]).replace(b"aXb", b"a\xffb")
    data = with_central_field(data, 1, _FLAGS, 0x800)
    error = refused(write(tmp_path, data))
    assert error.code == "bad_filename"
    assert error.message == "The archive has a file name that is not valid UTF-8."


def test_missing_entry_point(tmp_path: Path) -> None:
    error = refused(write(tmp_path, build_zip([Entry("main.py"), Entry("deep/er/submission.py")])))
    assert error.code == "missing_entry_point"
    assert error.message.startswith("The archive has no entry point: put submission.py")


def test_run_without_executable_bit(tmp_path: Path) -> None:
    error = refused(write(tmp_path, build_zip([Entry("run", b"#!/bin/sh\n", 0o100644)])))
    assert error.code == "entry_point_not_executable"
    assert "chmod +x run" in error.message


def test_two_entry_points(tmp_path: Path) -> None:
    entries = [Entry("submission.py"), Entry("run", b"#!/bin/sh\n", stat.S_IFREG | 0o755)]
    error = refused(write(tmp_path, build_zip(entries)))
    assert error.code == "ambiguous_entry_point"


def test_too_many_entries(tmp_path: Path) -> None:
    entries = [Entry("submission.py")] + [Entry(f"f{i}.txt") for i in range(10)]
    error = refused(write(tmp_path, build_zip(entries)), SMALL)
    assert error.code == "too_many_entries"
    assert error.message == "The archive has 11 entries; the limit is 10."


def test_too_many_entries_behind_a_lying_count(tmp_path: Path) -> None:
    entries = [Entry("submission.py")] + [Entry(f"f{i}.txt") for i in range(20)]
    local, records, _ = split_zip(build_zip(entries))
    error = refused(write(tmp_path, join_zip(local, records, declared_entries=1)), SMALL)
    assert error.code == "too_many_entries"
    assert error.message == "The archive has more entries than allowed; the limit is 10."


def test_zip64_end_record_is_read(tmp_path: Path) -> None:
    data = as_zip64(build_zip([Entry("submission.py"), Entry("a"), Entry("b")]))
    assert inspect_archive(write(tmp_path, data)).entry_count == 3


def test_zip64_entry_count_is_checked_before_parsing(tmp_path: Path) -> None:
    data = as_zip64(build_zip([Entry("submission.py")]), declared_entries=10**9)
    error = refused(write(tmp_path, data), SMALL)
    assert error.message == "The archive has 1000000000 entries; the limit is 10."


def test_too_large_unpacked(tmp_path: Path) -> None:
    big = Entry("weights.bin", os.urandom(1024 * 1024 + 1), compress=zipfile.ZIP_STORED)
    error = refused(write(tmp_path, build_zip([Entry("submission.py"), big])), SMALL)
    assert error.code == "too_large_unpacked"
    assert error.message == "The archive unpacks to 1.0 MB; the limit is 1.0 MB."


def test_high_compression_ratio(tmp_path: Path) -> None:
    bomb = Entry("zeros.bin", bytes(900_000))
    error = refused(write(tmp_path, build_zip([Entry("submission.py"), bomb])), SMALL)
    assert error.code == "zip_bomb"
    assert error.message.startswith("The archive's entry 'zeros.bin' expands ")
    assert error.message.endswith("the limit is 50-fold. It looks like a zip bomb.")


def test_high_total_ratio_split_over_many_small_entries(tmp_path: Path) -> None:
    limits = ArchiveLimits(max_entries=100, max_compression_ratio=50)
    entries = [Entry("submission.py")] + [Entry(f"z{i}", bytes(60_000)) for i in range(20)]
    error = refused(write(tmp_path, build_zip(entries)), limits)
    assert error.code == "zip_bomb"
    assert error.message.startswith("The archive expands ")


def test_overlapping_entries(tmp_path: Path) -> None:
    local, records, _ = split_zip(build_zip([Entry("submission.py", b"x" * 1000)]))
    copies = [renamed_record(records[0], f"copy{i}.py".encode()) for i in range(3)]
    error = refused(write(tmp_path, join_zip(local, records + copies)))
    assert error.code == "zip_bomb"
    assert "entries overlap" in error.message


def test_duplicate_names(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate it is asked to write
        data = build_zip([Entry("submission.py"), Entry("a.txt"), Entry("a.txt")])
    error = refused(write(tmp_path, data))
    assert error.code == "duplicate_entry"
    assert error.message == "The archive contains 'a.txt' twice."


def test_file_and_folder_with_one_name(tmp_path: Path) -> None:
    entries = [Entry("submission.py"), Entry("lib"), Entry("lib/x.py")]
    error = refused(write(tmp_path, build_zip(entries)))
    assert error.message == "The archive uses 'lib' both as a file and as a folder."


def test_encrypted_entry(tmp_path: Path) -> None:
    data = with_central_field(build_zip([Entry("submission.py")]), 0, _FLAGS, 0x1)
    error = refused(write(tmp_path, data))
    assert error.code == "encrypted"


def test_unsupported_compression_method(tmp_path: Path) -> None:
    # 9 is deflate64, which zipfile cannot read.
    data = with_central_field(build_zip([Entry("submission.py")]), 0, _METHOD, 9)
    error = refused(write(tmp_path, data))
    assert error.code == "unsupported_compression"
    assert error.message.endswith("(number 9); use deflate.")


# --- unpacking ---


def test_unpack_strips_the_top_folder_and_keeps_the_executable_bit(tmp_path: Path) -> None:
    entries = [
        Entry("pkg/", b"", stat.S_IFDIR | 0o755),
        Entry("pkg/run", b"#!/bin/sh\necho hi\n", stat.S_IFREG | stat.S_ISUID | 0o755),
        Entry("pkg/lib/data.txt", b"data", stat.S_IFREG | 0o600),
        Entry("pkg/empty/", b"", stat.S_IFDIR | 0o700),
    ]
    dest = tmp_path / "run"
    info = unpack(write(tmp_path, build_zip(entries)), dest)
    assert info.entry_point is EntryPoint.EXECUTABLE
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "empty",
        "lib",
        "lib/data.txt",
        "run",
    ]
    assert stat.S_IMODE((dest / "run").stat().st_mode) == 0o755  # no setuid
    assert stat.S_IMODE((dest / "lib/data.txt").stat().st_mode) == 0o644
    assert (dest / "lib/data.txt").read_bytes() == b"data"


def test_unpack_checks_again(tmp_path: Path) -> None:
    dest = tmp_path / "inner" / "run"
    path = write(tmp_path, build_zip([Entry("submission.py"), Entry("../escaped")]))
    with pytest.raises(InvalidUpload, match="outside its root"):
        unpack(path, dest)
    assert not (tmp_path / "inner" / "escaped").exists()
    assert list(dest.iterdir()) == []


def test_unpack_never_writes_through_a_link_in_the_destination(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "run"
    dest.mkdir()
    (dest / "lib").symlink_to(outside)
    path = write(tmp_path, build_zip([Entry("submission.py"), Entry("lib/x.py")]))
    with pytest.raises(InvalidUpload, match="outside its root"):
        unpack(path, dest)
    assert list(outside.iterdir()) == []


def test_unpack_refuses_to_overwrite(tmp_path: Path) -> None:
    dest = tmp_path / "run"
    dest.mkdir()
    (dest / "submission.py").symlink_to(dest / "target")
    with pytest.raises(FileExistsError):
        unpack(write(tmp_path, build_zip([Entry("submission.py")])), dest)
    assert not (dest / "target").exists()

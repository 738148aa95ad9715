"""Submission archives: inspect a zip on disk before anything is unpacked, and unpack it safely.

:func:`inspect_archive` refuses anything the worker should never see (not a zip, damaged, paths
outside the root, links and device entries, zip bombs, no entry point) with an
:class:`~edc.errors.InvalidUpload` whose message names the rule. :func:`unpack` runs the same
checks again, so an archive that changed on disk since intake is still refused, and writes plain
files only, never outside its destination.
"""

from __future__ import annotations

import enum
import errno
import lzma
import os
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from edc.config import Settings
from edc.errors import InvalidUpload, StorageFull

_MB = 1024 * 1024
# Entries smaller than this are not judged by their ratio: a few KB of zeros compresses 100-fold
# yet cannot hurt anyone, and the total size limit still counts them.
RATIO_FLOOR_BYTES = 64 * 1024
_COPY_CHUNK = 1024 * 1024
_SUPPORTED_COMPRESSION = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
_FLAG_ENCRYPTED = 0x1

# Zip structures read before zipfile parses the table of contents, so a table claiming millions
# of entries is refused without building millions of ZipInfo objects.
_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_EOCD64_SIGNATURE = b"PK\x06\x06"
_CENTRAL_HEADER = struct.Struct("<4s4B4HL2L5H2L")
_CENTRAL_HEADER_SIGNATURE = b"PK\x01\x02"
_LOCAL_HEADER_SIZE = 30
_MAX_COMMENT = 0xFFFF
# macOS Finder adds resource forks under this folder; they are checked but never unpacked, and
# do not count when looking for the single top folder.
MACOS_METADATA = "__MACOSX"


class EntryPoint(enum.StrEnum):
    """How the sandbox starts a submission."""

    PYTHON = "submission.py"  # a class the in-sandbox shim drives
    EXECUTABLE = "run"  # any language, speaking the decode protocol itself


@dataclass(frozen=True)
class ArchiveLimits:
    """The zip-bomb guards; the defaults are the settings' defaults."""

    max_entries: int = Settings.model_fields["max_archive_entries"].default
    max_unpacked_bytes: int = Settings.model_fields["max_unpacked_mb"].default * _MB
    max_compression_ratio: float = Settings.model_fields["max_compression_ratio"].default

    @classmethod
    def from_settings(cls, settings: Settings) -> ArchiveLimits:
        return cls(
            max_entries=settings.max_archive_entries,
            max_unpacked_bytes=settings.max_unpacked_mb * _MB,
            max_compression_ratio=settings.max_compression_ratio,
        )


@dataclass(frozen=True)
class ArchiveInfo:
    """What inspection learned about an accepted archive."""

    entry_point: EntryPoint
    # "" when the entry point sits at the root, else the single top folder with its slash ("x/").
    top_folder: str
    # Every member, folders included.
    entry_count: int
    # Sum of the members' uncompressed sizes.
    uncompressed_bytes: int


@dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    path: PurePosixPath  # normalised, relative, checked
    is_dir: bool
    mode: int  # unix permission bits, 0 when the archive recorded none


def inspect_archive(path: Path, limits: ArchiveLimits | None = None) -> ArchiveInfo:
    """Check the zip at ``path`` without unpacking it; InvalidUpload names the first fault."""
    limits = limits or ArchiveLimits()
    with _open_zip(path, limits) as zf:
        members = _checked_members(zf, limits)
        info = _archive_info(members)
        _verify_contents(zf, members)
    return info


def unpack(archive_path: Path, dest_dir: Path, limits: ArchiveLimits | None = None) -> ArchiveInfo:
    """Check the archive again, then write its files under ``dest_dir`` without the top folder.

    Only regular files and folders are created; executable bits are kept, other mode bits are not.
    """
    limits = limits or ArchiveLimits()
    dest_dir.mkdir(parents=True, exist_ok=True)
    root = dest_dir.resolve()
    with _open_zip(archive_path, limits) as zf:
        members = _checked_members(zf, limits)
        info = _archive_info(members)
        try:
            for member in members:
                relative = _strip_prefix(member.path, info.top_folder)
                if relative is None or _is_macos_metadata(member):
                    continue
                target = _target_inside(root, relative)
                if member.is_dir:
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _write_member(zf, member, target)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(
                    "The disk is full: the submission could not be unpacked."
                ) from exc
            raise
    return info


def _open_zip(path: Path, limits: ArchiveLimits) -> zipfile.ZipFile:
    # A missing file or a failing disk is the platform's fault, not the participant's: OSErrors
    # other than zipfile's bad seeks propagate untranslated.
    size = path.stat().st_size
    if size == 0:
        raise InvalidUpload("The upload is empty.", code="empty")
    with path.open("rb") as fp:
        span = _central_directory_span(fp, size)
        if span is None:
            fp.seek(0)
            if fp.read(4) == b"PK\x03\x04":
                raise InvalidUpload(
                    "The archive is truncated: its table of contents is missing.", code="truncated"
                )
            raise InvalidUpload("The upload is not a zip archive.", code="not_a_zip")
        _count_entries(fp, span, limits)
    try:
        return zipfile.ZipFile(path)
    except UnicodeDecodeError as exc:
        raise InvalidUpload(
            "The archive has a file name that is not valid UTF-8.", code="bad_filename"
        ) from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise InvalidUpload(
            f"The archive is damaged and cannot be read ({exc}).", code="damaged"
        ) from exc
    except NotImplementedError as exc:  # a header naming a zip version no tool writes
        raise InvalidUpload(
            f"The archive is damaged or uses an unsupported zip feature ({exc}).", code="damaged"
        ) from exc
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # a seek to a negative offset named by a damaged header
            raise
        raise InvalidUpload("The archive is damaged and cannot be read.", code="damaged") from exc


@dataclass(frozen=True)
class _DirectorySpan:
    start: int
    size: int
    declared_entries: int


def _central_directory_span(fp: BinaryIO, file_size: int) -> _DirectorySpan | None:
    """Find the table of contents the way zipfile does, from the end-of-directory record."""
    tail_start = max(file_size - _MAX_COMMENT - _EOCD.size, 0)
    fp.seek(tail_start)
    tail = fp.read()
    at = tail.rfind(_EOCD_SIGNATURE)
    if at < 0 or len(tail) - at < _EOCD.size:
        return None
    eocd_pos = tail_start + at
    fields = _EOCD.unpack_from(tail, at)
    entries, cd_size = fields[4], fields[5]
    start = eocd_pos - cd_size
    locator_pos = eocd_pos - _EOCD64_LOCATOR.size
    if locator_pos >= 0:
        fp.seek(locator_pos)
        locator = fp.read(_EOCD64_LOCATOR.size)
        if locator[:4] == _EOCD64_LOCATOR_SIGNATURE:
            record_pos = locator_pos - _EOCD64.size
            if record_pos < 0:
                return None
            fp.seek(record_pos)
            record = fp.read(_EOCD64.size)
            if record[:4] != _EOCD64_SIGNATURE:
                return None
            fields64 = _EOCD64.unpack(record)
            entries, cd_size = fields64[7], fields64[8]
            start = record_pos - cd_size
    if start < 0:
        return None
    return _DirectorySpan(start=start, size=cd_size, declared_entries=entries)


def _count_entries(fp: BinaryIO, span: _DirectorySpan, limits: ArchiveLimits) -> None:
    # The declared count can lie, so walk the headers too, stopping one past the limit.
    if span.declared_entries > limits.max_entries:
        raise _too_many_entries(span.declared_entries, limits)
    fp.seek(span.start)
    end = span.start + span.size
    position, count = span.start, 0
    while position + _CENTRAL_HEADER.size <= end:
        header = fp.read(_CENTRAL_HEADER.size)
        if len(header) < _CENTRAL_HEADER.size or header[:4] != _CENTRAL_HEADER_SIGNATURE:
            return  # damaged: zipfile reports it
        fields = _CENTRAL_HEADER.unpack(header)
        name_len, extra_len, comment_len = fields[12], fields[13], fields[14]
        count += 1
        if count > limits.max_entries:
            raise _too_many_entries(None, limits)
        position += _CENTRAL_HEADER.size + name_len + extra_len + comment_len
        fp.seek(position)


def _too_many_entries(count: int | None, limits: ArchiveLimits) -> InvalidUpload:
    has = f"{count} entries" if count is not None else "more entries than allowed"
    return InvalidUpload(
        f"The archive has {has}; the limit is {limits.max_entries}.", code="too_many_entries"
    )


def _checked_members(zf: zipfile.ZipFile, limits: ArchiveLimits) -> list[_Member]:
    infos = zf.infolist()
    if not infos:
        raise InvalidUpload("The archive has no files in it.", code="empty")
    if len(infos) > limits.max_entries:
        raise _too_many_entries(len(infos), limits)
    members = [_checked_member(info, limits) for info in infos]
    _refuse_duplicates(members)
    _refuse_overlaps(infos)
    _refuse_bombs(members, limits)
    return members


def _checked_member(info: zipfile.ZipInfo, limits: ArchiveLimits) -> _Member:
    name = info.filename
    _refuse_bad_characters(name)
    # Old Windows tools write backslashes as separators; treat them as such before judging paths.
    posix_name = name.replace("\\", "/")
    if posix_name.startswith("/") or (len(posix_name) > 1 and posix_name[1] == ":"):
        raise InvalidUpload(
            f"The archive contains an absolute path: {name!r}.", code="absolute_path"
        )
    parts = [part for part in posix_name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidUpload(
            f"The archive contains a path outside its root: {name!r}.", code="path_traversal"
        )
    if not parts:
        raise InvalidUpload(
            f"The archive contains an entry with no name: {name!r}.", code="bad_path"
        )

    unix_mode = info.external_attr >> 16
    file_type = stat.S_IFMT(unix_mode)
    if file_type == stat.S_IFLNK:
        raise InvalidUpload(f"The archive contains a symbolic link: {name!r}.", code="symlink")
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise InvalidUpload(
            f"The archive contains a device, pipe or socket entry: {name!r}.", code="special_file"
        )
    if info.flag_bits & _FLAG_ENCRYPTED:
        raise InvalidUpload(
            f"The archive contains an encrypted file: {name!r}; upload it without a password.",
            code="encrypted",
        )
    if info.compress_type not in _SUPPORTED_COMPRESSION:
        raise InvalidUpload(
            f"The archive compresses {name!r} with an unsupported method "
            f"(number {info.compress_type}); use deflate.",
            code="unsupported_compression",
        )
    is_dir = posix_name.endswith("/") or file_type == stat.S_IFDIR
    if is_dir and info.file_size:
        raise InvalidUpload(f"The archive's folder entry {name!r} has content.", code="bad_path")
    return _Member(
        info=info,
        path=PurePosixPath(*parts),
        is_dir=is_dir,
        mode=stat.S_IMODE(unix_mode),
    )


def _refuse_bad_characters(name: str) -> None:
    for char in name:
        category = unicodedata.category(char)
        # Cc: control characters; Cs: lone surrogates; both break logs, terminals and filesystems.
        if category in ("Cc", "Cs"):
            raise InvalidUpload(
                f"The archive has a file name with a control character: {name!r}.",
                code="bad_filename",
            )


def _refuse_duplicates(members: list[_Member]) -> None:
    files: set[PurePosixPath] = set()
    folders: set[PurePosixPath] = set()
    for member in members:
        if member.is_dir:
            folders.add(member.path)
            continue
        if member.path in files:
            raise InvalidUpload(
                f"The archive contains {member.path.as_posix()!r} twice.", code="duplicate_entry"
            )
        files.add(member.path)
        folders.update(member.path.parents)
    clash = files & folders
    if clash:
        name = min(clash).as_posix()
        raise InvalidUpload(
            f"The archive uses {name!r} both as a file and as a folder.", code="duplicate_entry"
        )


def _refuse_overlaps(infos: list[zipfile.ZipInfo]) -> None:
    # Entries sharing compressed bytes are the trick of the non-recursive zip bomb.
    previous_end = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        if info.header_offset < previous_end:
            raise InvalidUpload(
                f"The archive's entries overlap ({info.filename!r}); it looks like a zip bomb.",
                code="zip_bomb",
            )
        previous_end = info.header_offset + _LOCAL_HEADER_SIZE + info.compress_size


def _refuse_bombs(members: list[_Member], limits: ArchiveLimits) -> None:
    total = sum(m.info.file_size for m in members)
    if total > limits.max_unpacked_bytes:
        raise InvalidUpload(
            f"The archive unpacks to {_mb(total)}; the limit is {_mb(limits.max_unpacked_bytes)}.",
            code="too_large_unpacked",
        )
    for member in members:
        info = member.info
        if info.file_size > RATIO_FLOOR_BYTES and _ratio(info.file_size, info.compress_size) > (
            limits.max_compression_ratio
        ):
            raise InvalidUpload(
                f"The archive's entry {info.filename!r} expands "
                f"{_ratio(info.file_size, info.compress_size):.0f}-fold; the limit is "
                f"{limits.max_compression_ratio:.0f}-fold. It looks like a zip bomb.",
                code="zip_bomb",
            )
    compressed = sum(m.info.compress_size for m in members)
    if total > RATIO_FLOOR_BYTES and _ratio(total, compressed) > limits.max_compression_ratio:
        raise InvalidUpload(
            f"The archive expands {_ratio(total, compressed):.0f}-fold in total; the limit is "
            f"{limits.max_compression_ratio:.0f}-fold. It looks like a zip bomb.",
            code="zip_bomb",
        )


def _ratio(uncompressed: int, compressed: int) -> float:
    return uncompressed / max(compressed, 1)


def _mb(size: int) -> str:
    return f"{size / _MB:.1f} MB"


def _archive_info(members: list[_Member]) -> ArchiveInfo:
    top_folder = _single_top_folder(members)
    entry_point = _entry_point(members, top_folder)
    return ArchiveInfo(
        entry_point=entry_point,
        top_folder=top_folder,
        entry_count=len(members),
        uncompressed_bytes=sum(m.info.file_size for m in members),
    )


def _is_macos_metadata(member: _Member) -> bool:
    return member.path.parts[0] == MACOS_METADATA


def _single_top_folder(members: list[_Member]) -> str:
    members = [m for m in members if not _is_macos_metadata(m)]
    tops = {m.path.parts[0] for m in members}
    if len(tops) != 1:
        return ""
    (top,) = tops
    # A lone file at the root is not a folder, even when it is the only entry.
    if any(len(m.path.parts) == 1 and not m.is_dir for m in members):
        return ""
    return f"{top}/"


def _entry_point(members: list[_Member], top_folder: str) -> EntryPoint:
    root_files = {
        relative.as_posix(): m
        for m in members
        if not m.is_dir
        and not _is_macos_metadata(m)
        and (relative := _strip_prefix(m.path, top_folder)) is not None
        and len(relative.parts) == 1
    }
    python = root_files.get(EntryPoint.PYTHON.value)
    program = root_files.get(EntryPoint.EXECUTABLE.value)
    where = f"the folder {top_folder!r}" if top_folder else "the archive's root"
    if python is not None and program is not None:
        raise InvalidUpload(
            f"The archive has both submission.py and run in {where}; keep only one entry point.",
            code="ambiguous_entry_point",
        )
    if python is not None:
        return EntryPoint.PYTHON
    if program is not None:
        if not program.mode & 0o111:
            raise InvalidUpload(
                f"The entry point 'run' in {where} is not marked executable; "
                "set its executable bit (chmod +x run) before zipping.",
                code="entry_point_not_executable",
            )
        return EntryPoint.EXECUTABLE
    raise InvalidUpload(
        "The archive has no entry point: put submission.py (Python) or an executable file named "
        "run (any language) at its root or inside its single top folder.",
        code="missing_entry_point",
    )


def _strip_prefix(path: PurePosixPath, top_folder: str) -> PurePosixPath | None:
    """The path below the top folder; None for the top folder itself."""
    if not top_folder:
        return path
    parts = path.parts[1:]
    return PurePosixPath(*parts) if parts else None


def _verify_contents(zf: zipfile.ZipFile, members: list[_Member]) -> None:
    # Reading every byte checks each CRC, so a damaged or cut archive is refused at intake rather
    # than failing in the worker. zipfile never yields more than an entry's declared size.
    for member in members:
        if member.is_dir:
            continue
        for _chunk in _read_member(zf, member):
            pass


def _read_member(zf: zipfile.ZipFile, member: _Member) -> Iterator[bytes]:
    name = member.info.filename
    try:
        with zf.open(member.info) as source:
            while chunk := source.read(_COPY_CHUNK):
                yield chunk
    except (
        zipfile.BadZipFile,
        EOFError,
        ValueError,
        NotImplementedError,
        zlib.error,
        lzma.LZMAError,
    ) as exc:
        raise InvalidUpload(
            f"The archive is damaged: {name!r} cannot be read ({exc}).", code="damaged"
        ) from exc
    except OSError as exc:
        if exc.errno is not None:  # the disk itself: the platform's fault
            raise
        # bz2 reports a corrupt stream as an OSError without an errno.
        raise InvalidUpload(
            f"The archive is damaged: {name!r} cannot be read ({exc}).", code="damaged"
        ) from exc
    except RuntimeError as exc:  # zipfile's "encrypted, password required"
        raise InvalidUpload(
            f"The archive contains an encrypted file: {name!r}; upload it without a password.",
            code="encrypted",
        ) from exc


def _target_inside(root: Path, relative: PurePosixPath) -> Path:
    target = root.joinpath(*relative.parts)
    # The checks above already refuse '..' and absolute names; this is the last line of defence.
    if not target.resolve().is_relative_to(root):
        raise InvalidUpload(
            f"The archive contains a path outside its root: {relative.as_posix()!r}.",
            code="path_traversal",
        )
    return target


def _write_member(zf: zipfile.ZipFile, member: _Member, target: Path) -> None:
    mode = 0o755 if member.mode & 0o111 else 0o644
    # O_EXCL and O_NOFOLLOW: never write through a link or over something already there.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    written = 0
    with os.fdopen(fd, "wb") as out:
        for chunk in _read_member(zf, member):
            written += len(chunk)
            if written > member.info.file_size:
                raise InvalidUpload(
                    f"The archive's entry {member.info.filename!r} holds more than it declares.",
                    code="zip_bomb",
                )
            out.write(chunk)
    os.chmod(target, mode)  # the umask may have narrowed it

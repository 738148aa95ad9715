"""The participant's (and admin's) HTTP client for the portal's API, used by the ``edc`` CLI.

Errors from the network or from the portal become :class:`PortalError` with the portal's own
sentence, so the CLI can print it as it is.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from edc.archive import ArchiveLimits, inspect_archive
from edc.config import Settings
from edc.errors import EdcError, UploadTooLarge
from edc.schemas import UploadLimitsOut

UPLOAD_CHUNK_BYTES = 256 * 1024
# Left out when a directory is zipped for upload.
SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".hg", ".svn", ".venv", ".mypy_cache"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")


class PortalError(EdcError):
    """The portal refused (``status`` set) or could not be reached (``status`` None)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Credentials:
    server: str
    token: str


def credentials_path(config_dir: Path) -> Path:
    return config_dir / "credentials.json"


def save_credentials(config_dir: Path, credentials: Credentials) -> Path:
    """Write the token readable by its owner only."""
    config_dir.mkdir(parents=True, exist_ok=True)
    path = credentials_path(config_dir)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"server": credentials.server, "token": credentials.token}, out)
    os.chmod(path, 0o600)
    return path


def load_credentials(config_dir: Path) -> Credentials | None:
    try:
        raw = json.loads(credentials_path(config_dir).read_text())
        return Credentials(server=str(raw["server"]), token=str(raw["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def zip_directory(directory: Path, into: Path) -> Path:
    """Zip a submission directory (executable bits kept; caches and VCS folders left out)."""
    target = into / f"{directory.resolve().name or 'submission'}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for root, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
            for name in sorted(files):
                if name.endswith(SKIPPED_SUFFIXES):
                    continue
                path = Path(root) / name
                archive.write(path, path.relative_to(directory).as_posix())
    return target


@contextmanager
def archive_for(path: Path) -> Iterator[Path]:
    """``path`` itself when it is a file, else a temporary zip of the directory."""
    if path.is_dir():
        with tempfile.TemporaryDirectory(prefix="edc-submit-") as tmp:
            yield zip_directory(path, Path(tmp))
    elif path.is_file():
        yield path
    else:
        raise PortalError(f"{path} is neither a file nor a directory.")


@dataclass(frozen=True)
class UploadLimits:
    """What the portal's intake refuses: an upload over ``max_upload_bytes`` as it streams in,
    then a stored zip over ``archive``'s zip-bomb limits."""

    max_upload_bytes: int
    archive: ArchiveLimits
    # True: the portal's own (``GET /api/v1/upload-limits``); False: this machine's settings.
    published: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        """This machine's ``EDC_*`` values, else the platform's defaults."""
        return cls(
            max_upload_bytes=settings.max_upload_bytes,
            archive=ArchiveLimits.from_settings(settings),
            published=False,
        )


def check_archive(archive: Path, limits: UploadLimits) -> None:
    """The portal's intake checks, run here before a byte is sent; the same refusals, sentences
    included (InvalidUpload, or UploadTooLarge).

    The portal refuses an upload over its ``EDC_MAX_UPLOAD_MB`` as it streams in, then inspects
    the stored zip with :func:`edc.archive.inspect_archive` (zip safety, the zip-bomb limits, an
    entry point). ``limits``: the portal's own (:meth:`PortalClient.upload_limits`), else this
    machine's (:meth:`UploadLimits.from_settings`).
    """
    if archive.stat().st_size > limits.max_upload_bytes:
        raise UploadTooLarge(limits.max_upload_bytes)
    inspect_archive(archive, limits.archive)


class PortalClient:
    """One portal, one token. ``http`` may be given (tests pass a client bound to an app)."""

    def __init__(
        self,
        server: str,
        token: str | None = None,
        *,
        http: httpx.Client | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.server = server.rstrip("/")
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = http or httpx.Client(base_url=self.server, timeout=timeout_s)
        self._headers = headers

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PortalClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- plumbing ---

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise PortalError(f"Cannot reach the portal at {self.server}: {exc}") from exc
        _raise_for_refusal(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # --- participant ---

    def issue_token(self, *, name: str, password: str, label: str) -> dict[str, Any]:
        body = {"name": name, "password": password, "label": label}
        result: dict[str, Any] = self._json("POST", "/api/v1/tokens", json=body)
        return result

    def me(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/api/v1/me")
        return result

    def my_team(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/api/v1/teams/mine")
        return result

    def create_team(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("POST", "/api/v1/teams", json={"name": name})
        return result

    def join_team(self, invite_code: str) -> dict[str, Any]:
        body = {"invite_code": invite_code}
        result: dict[str, Any] = self._json("POST", "/api/v1/teams/join", json=body)
        return result

    def leave_team(self) -> None:
        self._request("POST", "/api/v1/teams/leave")

    def upload_limits(self) -> UploadLimits | None:
        """The limits the portal checks an upload against; None where it does not say them (a
        release before ``GET /api/v1/upload-limits``, a proxy's page, any refusal): they only let
        a refusal come early, and the portal checks every upload itself. PortalError only when
        the portal cannot be reached."""
        try:
            body = self._json("GET", "/api/v1/upload-limits")
            out = UploadLimitsOut.model_validate(body)
        except PortalError as exc:
            if exc.status is None:
                raise
            return None
        except (ValueError, ValidationError):  # not JSON, or not the limits
            return None
        return UploadLimits(
            max_upload_bytes=out.max_upload_bytes,
            archive=ArchiveLimits(
                max_entries=out.max_archive_entries,
                max_unpacked_bytes=out.max_unpacked_bytes,
                max_compression_ratio=out.max_compression_ratio,
            ),
            published=True,
        )

    def submit(
        self,
        archive: Path,
        *,
        track: str | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Upload a zip as multipart, streamed from disk, to ``track`` (None: the only or the
        default one); ``on_progress(sent, total)``."""
        boundary = f"edc-{uuid.uuid4().hex}"
        filename = archive.name.replace('"', "")
        # The track's field comes before the file: the portal reads it before storing a byte.
        field = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="track"\r\n\r\n{track}\r\n'
            if track
            else ""
        )
        head = (
            f"{field}--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = archive.stat().st_size
        total = len(head) + size + len(tail)

        def body() -> Iterator[bytes]:
            sent = 0
            for part in _file_parts(archive, head, tail):
                yield part
                sent += len(part)
                if on_progress is not None:
                    on_progress(sent, total)

        result: dict[str, Any] = self._json(
            "POST",
            "/api/v1/submissions",
            content=body(),
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(total),
            },
        )
        return result

    def submission(self, submission_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/v1/submissions/{submission_id}")
        return result

    def logs(self, submission_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/v1/submissions/{submission_id}/logs")
        return result

    def leaderboard(self, track: str | None = None) -> dict[str, Any]:
        path = (
            f"/api/v1/tracks/{quote(track, safe='')}/leaderboard"
            if track
            else "/api/v1/leaderboard"
        )
        result: dict[str, Any] = self._json("GET", path)
        return result

    def tracks(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/tracks")
        return result

    def events(self, submission_id: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """The submission's server-sent events as (event, data) until the stream ends."""
        path = f"/api/v1/submissions/{submission_id}/events"
        headers = {**self._headers, "Accept": "text/event-stream"}
        try:
            with self._http.stream(
                "GET", path, headers=headers, timeout=httpx.Timeout(60.0, read=None)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_refusal(response)
                yield from parse_events(response.iter_lines())
        except httpx.HTTPError as exc:
            raise PortalError(f"Lost the portal at {self.server}: {exc}") from exc

    # --- admin ---

    def admin_action(
        self, submission_id: int, action: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "POST", f"/api/v1/admin/submissions/{submission_id}/{action}", json=body or {}
        )
        return result

    def admin_queue(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/api/v1/admin/queue")
        return result

    def admin_workers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/admin/workers")
        return result

    def admin_finalize(
        self, *, top_k: int, rounds: int, track: str | None = None
    ) -> dict[str, Any]:
        """Open ``track``'s final phase (None: the default track's)."""
        body: dict[str, Any] = {"top_k": top_k, "rounds": rounds, "track": track}
        result: dict[str, Any] = self._json("POST", "/api/v1/admin/finals", json=body)
        return result

    def admin_finals(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/admin/finals")
        return result

    def final_leaderboard(self, track: str | None = None) -> dict[str, Any]:
        path = (
            f"/api/v1/tracks/{quote(track, safe='')}/leaderboard/final"
            if track
            else "/api/v1/leaderboard/final"
        )
        result: dict[str, Any] = self._json("GET", path)
        return result

    def admin_export(self, what: str, *, track: str | None = None) -> str:
        params = {"track": track} if track else None
        return self._request("GET", f"/api/v1/admin/{what}.csv", params=params).text


def _file_parts(archive: Path, head: bytes, tail: bytes) -> Iterator[bytes]:
    yield head
    with archive.open("rb") as source:
        while chunk := source.read(UPLOAD_CHUNK_BYTES):
            yield chunk
    yield tail


def _raise_for_refusal(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    detail, code = f"The portal answered {response.status_code}.", None
    try:
        body = response.json()
        detail = str(body.get("detail", detail))
        code = body.get("code")
    except ValueError:
        pass
    retry = response.headers.get("retry-after")
    raise PortalError(
        detail,
        status=response.status_code,
        code=code,
        retry_after_s=int(retry) if retry and retry.isdigit() else None,
    )


def parse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Server-sent events from text lines (the WHATWG format: fields, blank line ends one)."""
    event = "message"
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)

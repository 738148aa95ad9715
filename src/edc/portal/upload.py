"""Streaming multipart intake: the request body is parsed as it arrives and never held whole.

FastAPI's ``UploadFile`` spools the entire body before the route runs, so a 10 GB body would be
read (and written to a temporary file) before any limit applied. Here python-multipart's
streaming parser runs on ``request.stream()`` and the file field's bytes go straight to storage;
the body is refused by its Content-Length before reading, and otherwise the moment the counted
bytes pass the limit. A body that comes too slowly is cut (:class:`~edc.portal.body_limits.Pace`,
the pace every request body keeps): a connection cannot be held open at a byte a second; and one
participant holds at most so many uploads at once (:class:`~edc.portal.upload_slots.UploadSlots`),
so cannot hold many open at the minimum rate. These routes are the ones
:class:`~edc.portal.body_limits.BodyLimits` leaves to their own limits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing
from typing import Any

import anyio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from edc.config import Settings
from edc.errors import InvalidUpload, UploadTooLarge
from edc.models import Submission
from edc.portal.body_limits import Pace
from edc.portal.upload_slots import UploadSlots
from edc.services import submissions

FILE_FIELD = "file"
# The track it competes in: a text field before the file (or ?track=); omitted, the only or the
# default track.
TRACK_FIELD = "track"
# Room for the multipart boundaries, part headers and small fields around the file itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# Text fields before the file (a form's CSRF token) are kept up to these bounds.
MAX_TEXT_FIELDS = 8
MAX_TEXT_FIELD_BYTES = 1024

# The request body as OpenAPI shows it, since the route reads the stream itself.
UPLOAD_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {
                        TRACK_FIELD: {
                            "type": "string",
                            "description": "The track to compete in (see /api/v1/tracks), sent "
                            "before the file; omitted: the only or the default track.",
                        },
                        FILE_FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": "A zip holding submission.py, or an executable run "
                            "file, at its root or inside its single top folder.",
                        },
                    },
                }
            }
        },
    }
}


async def receive_submission(
    request: Request,
    settings: Settings,
    *,
    owner_id: int,
    slots: UploadSlots,
    check_fields: Callable[[Mapping[str, str]], None] | None = None,
) -> Submission:
    """Stream the request's file field into a new submission; raises the project's errors.

    The upload holds one of the owner's ``slots`` from before its body is read until it ends,
    however it ends. ``check_fields`` sees the small text fields that came before the file (an
    HTML form's CSRF token) and may refuse the request before a byte of the file is stored.
    """
    reader = MultipartFileReader(
        request,
        field=FILE_FIELD,
        max_body_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
        file_limit_bytes=settings.max_upload_bytes,
        pace=Pace.from_settings(settings),
    )
    async with slots.held(owner_id):
        await reader.open()
        if check_fields is not None:
            check_fields(reader.fields)
        track = reader.fields.get(TRACK_FIELD) or request.query_params.get(TRACK_FIELD) or None
        async with aclosing(reader.chunks()) as chunks:
            return await submissions.create_submission(
                settings, owner_id=owner_id, filename=reader.filename, chunks=chunks, track=track
            )


class MultipartFileReader:
    """Hands out one file field's bytes as the body arrives; other fields are skipped."""

    def __init__(
        self,
        request: Request,
        *,
        field: str,
        max_body_bytes: int,
        file_limit_bytes: int,
        pace: Pace | None = None,
    ) -> None:
        """``max_body_bytes`` bounds the whole body; ``file_limit_bytes`` is named in refusals;
        ``pace``, when given, cuts a body that arrives too slowly."""
        self._request = request
        self._pace = pace
        self._field = field.encode()
        self._max_body_bytes = max_body_bytes
        self._file_limit_bytes = file_limit_bytes
        self.filename: str | None = None
        self._body_bytes = 0
        self._stream: AsyncIterator[bytes] | None = None
        self._parser: MultipartParser | None = None
        # Parser state, filled by the callbacks below.
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._part_headers: dict[bytes, bytes] = {}
        self._in_file = False
        self._file_found = False
        self._file_done = False
        self._body_done = False
        self._pending: deque[bytes] = deque()
        # Small text fields seen before the file, by name (later ones are not kept).
        self.fields: dict[str, str] = {}
        self._text_name: str | None = None
        self._text_value = bytearray()

    async def open(self) -> None:
        """Check the headers, then read until the file field's own headers have arrived."""
        self._refuse_by_headers()
        self._stream = self._request.stream()
        while not self._file_found and not self._body_done:
            await self._pump()
        if not self._file_found:
            raise InvalidUpload(
                f"The request has no file field named {self._field.decode()!r}.",
                code="missing_file",
            )

    async def chunks(self) -> AsyncGenerator[bytes]:
        """The file's bytes in arrival order; then the rest of the body is read and checked."""
        while True:
            while self._pending:
                yield self._pending.popleft()
            if self._file_done or self._body_done:
                break
            await self._pump()
        while not self._body_done:
            await self._pump()

    def _refuse_by_headers(self) -> None:
        content_type, options = parse_options_header(self._request.headers.get("content-type"))
        boundary = options.get(b"boundary")
        if content_type != b"multipart/form-data" or not boundary:
            raise InvalidUpload(
                f"Send the archive as multipart/form-data with a file field named "
                f"{self._field.decode()!r}.",
                code="bad_request",
            )
        declared = self._request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise InvalidUpload(
                    "The Content-Length header is not a number.", code="bad_request"
                )
            if int(declared) > self._max_body_bytes:
                raise UploadTooLarge(self._file_limit_bytes)
        try:
            self._parser = MultipartParser(
                boundary,
                callbacks={
                    "on_part_begin": self._on_part_begin,
                    "on_header_field": self._on_header_field,
                    "on_header_value": self._on_header_value,
                    "on_header_end": self._on_header_end,
                    "on_headers_finished": self._on_headers_finished,
                    "on_part_data": self._on_part_data,
                    "on_part_end": self._on_part_end,
                    "on_end": self._on_end,
                },
            )
        except FormParserError as exc:
            raise InvalidUpload(
                f"The multipart boundary is unusable: {exc}", code="bad_request"
            ) from exc

    async def _pump(self) -> None:
        assert self._stream is not None and self._parser is not None
        try:
            if self._pace is None:
                chunk = await anext(self._stream, None)
            else:
                chunk = b""
                with anyio.move_on_after(self._pace.wait_s()) as waited:
                    chunk = await anext(self._stream, None)
                if waited.cancelled_caught:
                    raise self._pace.too_slow()
                if chunk is not None:
                    self._pace.received += len(chunk)
        except ClientDisconnect as exc:
            raise InvalidUpload(
                "The upload was interrupted before it finished.", code="incomplete"
            ) from exc
        if chunk is None:
            if not self._body_done:
                raise InvalidUpload(
                    "The upload ended before its multipart body was complete.", code="incomplete"
                )
            return
        self._body_bytes += len(chunk)
        if self._body_bytes > self._max_body_bytes:
            raise UploadTooLarge(self._file_limit_bytes)
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise InvalidUpload(
                f"The multipart body is malformed: {exc}", code="bad_request"
            ) from exc

    # python-multipart callbacks

    def _on_part_begin(self) -> None:
        self._part_headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._part_headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        disposition, options = parse_options_header(
            self._part_headers.get(b"content-disposition", b"")
        )
        # Only the first file field counts; a second one is skipped like any other field.
        is_file_field = disposition == b"form-data" and options.get(b"name") == self._field
        if is_file_field and not self._file_found:
            self._in_file = True
            self._file_found = True
            self.filename = _decode_filename(options.get(b"filename"))
        elif (
            disposition == b"form-data"
            and b"filename" not in options
            and not self._file_found
            and len(self.fields) < MAX_TEXT_FIELDS
        ):
            self._text_name = options.get(b"name", b"").decode("utf-8", "replace")
            self._text_value.clear()

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file and end > start:
            self._pending.append(bytes(data[start:end]))
        elif self._text_name is not None:
            if len(self._text_value) + (end - start) > MAX_TEXT_FIELD_BYTES:
                self._text_name = None  # too long to be one of ours: skipped
            else:
                self._text_value += data[start:end]

    def _on_part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self._file_done = True
        elif self._text_name is not None:
            self.fields.setdefault(self._text_name, self._text_value.decode("utf-8", "replace"))
            self._text_name = None

    def _on_end(self) -> None:
        self._body_done = True


def _decode_filename(raw: bytes | None) -> str | None:
    # Browsers and HTTP clients send UTF-8; anything else is read as Latin-1 rather than refused.
    if raw is None:
        return None
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        name = raw.decode("latin-1")
    # The HTML form encoding escapes exactly these three (WHATWG "multipart/form-data encoding").
    return name.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")

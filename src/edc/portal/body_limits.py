"""A cap on every request body but the submission uploads', before any route parses it.

A route that reads a form or JSON gets the whole body from Starlette, which spools multipart file
parts to temporary files with no total limit; on ``/login``, ``/signup`` and ``/api/v1/tokens``
that happens before any credential or CSRF check. So anyone could fill the portal's memory or
disk, or hold its connections with bodies sent a byte at a time. :class:`BodyLimits` stands
between the server and the application and answers as the uploads do (``portal/upload.py``, which
streams its own routes' bodies with its own limit and the same :class:`Pace`, and is left alone):

* a declared ``Content-Length`` over ``EDC_MAX_FORM_BYTES``: 413 when the route first asks for
  the body, before a byte of it is read (the router has then named the route: see
  :class:`CappedBody`);
* a body that grows past it (chunked, or longer than declared): 413 the moment it does;
* a body that comes slower than the upload pace (``EDC_UPLOAD_MIN_BYTES_PER_S`` after
  ``EDC_UPLOAD_GRACE_S``, no pause over ``EDC_UPLOAD_IDLE_TIMEOUT_S``): 408.

A refused body is read no further, and the answer closes the connection (what is left of the body
cannot be told from a next request). The refusal is raised into the application from ``receive``;
whatever the application makes of that (FastAPI turns a body it cannot read into a 400), its
answer is dropped and the refusal sent instead, as JSON ``{"detail", "code"}`` like every other.
(Starlette's own ``max_body_size`` caps size only, not pace, and answers in plain text.)
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edc.config import Settings
from edc.errors import UploadTooSlow
from edc.schemas import ErrorOut

_DIGITS = re.compile("[0-9]+")


@dataclass
class Pace:
    """How long the next piece of a body may take: byte k is due by start + grace + k / rate,
    and no wait is longer than the idle timeout."""

    min_bytes_per_s: int
    grace_s: float
    idle_timeout_s: float
    received: int = 0
    started: float = field(default_factory=time.monotonic)
    # What the refusal calls the body.
    subject: str = "The upload"

    @classmethod
    def from_settings(cls, settings: Settings, *, subject: str = "The upload") -> Pace:
        """The upload pace of the settings, starting now."""
        return cls(
            min_bytes_per_s=settings.upload_min_bytes_per_s,
            grace_s=settings.upload_grace_s,
            idle_timeout_s=settings.upload_idle_timeout_s,
            subject=subject,
        )

    def wait_s(self) -> float:
        due = self.started + self.grace_s + (self.received + 1) / self.min_bytes_per_s
        return max(0.0, min(self.idle_timeout_s, due - time.monotonic()))

    def too_slow(self) -> UploadTooSlow:
        return UploadTooSlow(
            f"{self.subject} was too slow and was cut off after {self.received} bytes: send at "
            f"least {self.min_bytes_per_s // 1024} KiB/s, with no pause over "
            f"{self.idle_timeout_s:g} s."
        )


@dataclass(frozen=True)
class Refusal:
    """An answer to a body that is read no further."""

    status: int
    code: str  # as the project's errors are coded (``too_large``, ``too_slow``)
    message: str

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = ErrorOut(detail=self.message, code=self.code).model_dump()
        # The rest of the body is unread, so the connection cannot carry another request.
        response = JSONResponse(body, self.status, headers={"Connection": "close"})
        await response(scope, receive, send)


class BodyRefused(Exception):
    """Raised into the application by ``receive``: the body is not to be read further."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class BodyLimits:
    """Pure ASGI middleware (it must not buffer anything): caps each request's body at
    ``EDC_MAX_FORM_BYTES`` and holds it to the upload pace, except where the route that reads it
    is one of the ``streamed`` endpoints, which read their bodies under their own limits."""

    def __init__(
        self, app: ASGIApp, *, settings: Settings, streamed: Collection[Callable[..., Any]]
    ) -> None:
        self.app = app
        self.settings = settings
        self.streamed = tuple(streamed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = CappedBody(scope, receive, settings=self.settings, streamed=self.streamed)
        started = False

        async def send_unless_refused(message: Message) -> None:
            nonlocal started
            if body.refusal is not None and not started:
                return  # the application's answer to a body it could not read: replaced
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, body.receive, send_unless_refused)
        except Exception:
            # A route that failed on its refused body (maybe inside a task group): answered below.
            if body.refusal is None:
                raise
            if started:
                # Refused while answering (a live view given a body it never sends): the answer
                # is cut short, which is all the client can get; nothing for the logs.
                return
        if body.refusal is not None and not started:
            await body.refusal.answer(scope, receive, send)


class CappedBody:
    """One request's ``receive``, counted and paced until its body is complete.

    Nothing is decided before the application first asks for the body: by then the router has
    put the route's endpoint in the scope, so an upload route is told apart by the very function
    that will read it, and a declared length is refused before a byte of the body is read.
    """

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        *,
        settings: Settings,
        streamed: Collection[Callable[..., Any]],
    ) -> None:
        self._scope = scope
        self._receive = receive
        self._settings = settings
        self._streamed = streamed
        self._max_bytes = settings.max_form_bytes
        self._pace: Pace | None = None  # from the first read: the route may start reading late
        self._done = False  # the body is complete (or left to the route): reads pass through
        self.refusal: Refusal | None = None

    async def receive(self) -> Message:
        if self.refusal is not None:
            raise BodyRefused(self.refusal)
        if self._done:  # after the body, only the disconnect is awaited (event streams)
            return await self._receive()
        if self._pace is None:
            if self._scope.get("endpoint") in self._streamed:
                self._done = True
                return await self._receive()
            refusal = self._refuse_by_headers(Headers(scope=self._scope))
            if refusal is not None:
                raise self._refuse(refusal)
            self._pace = Pace.from_settings(self._settings, subject="The request body")
        pace = self._pace
        message: Message = {}
        with anyio.move_on_after(pace.wait_s()) as waited:
            message = await self._receive()
        if waited.cancelled_caught:
            raise self._refuse(Refusal(408, "too_slow", pace.too_slow().message))
        if message["type"] != "http.request":  # http.disconnect: nothing more will come
            self._done = True
            return message
        pace.received += len(message.get("body", b""))
        if pace.received > self._max_bytes:
            raise self._refuse(self._too_large())
        self._done = not message.get("more_body", False)
        return message

    def _refuse_by_headers(self, headers: Headers) -> Refusal | None:
        declared = headers.get("content-length")
        if declared is None:
            return None
        if not _DIGITS.fullmatch(declared):  # str.isdigit would pass "²", which int() refuses
            return Refusal(400, "bad_request", "The Content-Length header is not a number.")
        if int(declared) > self._max_bytes:
            return self._too_large()
        return None

    def _refuse(self, refusal: Refusal) -> BodyRefused:
        self.refusal = refusal
        return BodyRefused(refusal)

    def _too_large(self) -> Refusal:
        return Refusal(
            413,
            "too_large",
            f"The request body is larger than the limit of {_size(self._max_bytes)}.",
        )


def _size(count: int) -> str:
    return f"{count // 1024} KiB" if count % 1024 == 0 else f"{count} bytes"

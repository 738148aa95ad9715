"""Server-sent events for one submission: a message each time what its owner sees changes.

The database is the truth, so it is polled, but once per submission, not once per open page:
every stream of a submission shares one :class:`SubmissionWatch`, whose poll runs at most once a
``poll_s`` whoever asks first, and each stream sends the watch's latest state when it is newer than
what that stream sent. A comment keeps idle connections open through proxies (and finds dead
ones: writing to a closed connection ends the stream). A stream ends after the final state, or
after ``sse_max_s`` (the browser reconnects).

Streams are bounded (:class:`StreamHub`): so many per participant and so many per portal; one
over is refused with 429 before it starts, so one account cannot take the portal's connections.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anyio
from starlette.concurrency import run_in_threadpool

from edc import db
from edc.config import Settings
from edc.db import database_errors
from edc.errors import RateLimited, ServiceUnavailable
from edc.portal.auth import Identity
from edc.portal.views import submission_event, visible_submission
from edc.schemas import SubmissionEvent

log = logging.getLogger(__name__)

POLL_S = 1.0
KEEPALIVE_S = 15.0


def snapshot(settings: Settings, submission_id: int, viewer: Identity) -> SubmissionEvent:
    with database_errors(), db.session_scope(settings) as session:
        return submission_event(session, visible_submission(session, submission_id, viewer))


def format_event(event: str, data: str, *, event_id: int | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in data.splitlines() or [""])
    return "\n".join(lines) + "\n\n"


class SubmissionWatch:
    """The latest state of one submission, polled at most once a ``poll_s`` for all its streams.

    ``viewer`` is whoever opened the first stream: every viewer of a submission (its owner, an
    admin) sees the same event, and each stream's access was checked when it opened.
    """

    def __init__(self, settings: Settings, submission_id: int, viewer: Identity, poll_s: float):
        self.settings, self.submission_id, self.viewer = settings, submission_id, viewer
        self.poll_s = poll_s
        self.sequence = 0  # bumped at each change
        self.payload: str | None = None
        self.final = False
        self.trouble: str | None = None  # why the last poll failed (the database is down)
        self.polls = 0
        self._polled_at = float("-inf")
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._polled_at < self.poll_s:
                return  # another stream polled just now
            self._polled_at = time.monotonic()
            self.polls += 1
            try:
                current = await run_in_threadpool(
                    snapshot, self.settings, self.submission_id, self.viewer
                )
            except ServiceUnavailable as exc:
                self.trouble = exc.message
                return
            self.trouble = None
            payload = current.model_dump_json()
            if payload != self.payload:
                self.payload, self.sequence = payload, self.sequence + 1
                self.final = current.status.is_final


@dataclass
class StreamSlot:
    """One open stream's place in the hub; released once, however the stream ends."""

    hub: StreamHub
    user_id: int
    submission_id: int
    released: bool = False

    def release(self) -> None:
        self.hub._release(self)


class StreamHub:
    """The open streams of one portal process: their bounds, and one watch per submission."""

    def __init__(self, settings: Settings, *, poll_s: float = POLL_S) -> None:
        self.settings = settings
        self.poll_s = poll_s
        self._lock = threading.Lock()  # slots are released from finalizers too
        self._per_user: Counter[int] = Counter()
        self._per_submission: Counter[int] = Counter()
        self._watches: dict[int, SubmissionWatch] = {}

    @property
    def open_streams(self) -> int:
        return sum(self._per_user.values())

    def check_room(self, viewer: Identity) -> None:
        """RateLimited when a new stream of ``viewer`` would be refused: asked before anything
        else, so a refused request costs no database read nor thread."""
        with self._lock:
            self._refuse_when_full(viewer)

    def _refuse_when_full(self, viewer: Identity) -> None:
        s = self.settings
        if self._per_user[viewer.user_id] >= s.sse_per_user:
            raise RateLimited(
                f"You have {s.sse_per_user} live views open, the most one participant may; "
                "close one (a browser tab) and try again.",
                retry_after_s=int(self.poll_s * 5),
            )
        if self.open_streams >= s.sse_total:
            raise RateLimited(
                "The portal is serving as many live views as it can; "
                "the page still works: reload it for the latest state.",
                retry_after_s=int(self.poll_s * 5),
            )

    def claim(self, viewer: Identity, submission_id: int) -> tuple[StreamSlot, SubmissionWatch]:
        """A slot for a new stream, or RateLimited when the viewer or the portal has too many."""
        s = self.settings
        with self._lock:
            self._refuse_when_full(viewer)
            self._per_user[viewer.user_id] += 1
            self._per_submission[submission_id] += 1
            watch = self._watches.get(submission_id)
            if watch is None:
                watch = SubmissionWatch(s, submission_id, viewer, self.poll_s)
                self._watches[submission_id] = watch
        return StreamSlot(self, viewer.user_id, submission_id), watch

    def _release(self, slot: StreamSlot) -> None:
        with self._lock:
            if slot.released:
                return
            slot.released = True
            self._per_user[slot.user_id] -= 1
            if self._per_user[slot.user_id] <= 0:
                del self._per_user[slot.user_id]
            self._per_submission[slot.submission_id] -= 1
            if self._per_submission[slot.submission_id] <= 0:
                del self._per_submission[slot.submission_id]
                self._watches.pop(slot.submission_id, None)

    def stream(
        self,
        viewer: Identity,
        submission_id: int,
        *,
        is_disconnected: Callable[[], Awaitable[bool]],
    ) -> AsyncIterator[str]:
        """The event stream, its slot claimed now (so a refusal comes before any byte is sent)."""
        slot, watch = self.claim(viewer, submission_id)
        events = _events(watch, slot, self.settings.sse_max_s, is_disconnected)
        # A stream that never starts (the client left first) never runs its ``finally``.
        weakref.finalize(events, slot.release)
        return events


async def _events(
    watch: SubmissionWatch,
    slot: StreamSlot,
    max_s: float,
    is_disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """``submission`` events while it moves, then one ``end`` event after its final state."""
    try:
        sent = 0
        opened = last_sent = time.monotonic()
        # Browsers reconnect after this many milliseconds if the connection drops.
        yield "retry: 3000\n\n"
        while not await is_disconnected() and time.monotonic() - opened < max_s:
            await watch.refresh()
            if watch.trouble is not None:
                yield f": {watch.trouble}\n\n"
                last_sent = time.monotonic()
            elif watch.sequence > sent and watch.payload is not None:
                sent = watch.sequence
                yield format_event("submission", watch.payload, event_id=sent)
                last_sent = time.monotonic()
                if watch.final:
                    yield format_event("end", "{}")
                    return
            elif time.monotonic() - last_sent >= KEEPALIVE_S:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            await anyio.sleep(watch.poll_s)
    finally:
        slot.release()

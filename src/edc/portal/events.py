"""Server-sent events for one submission: a message each time what its owner sees changes.

The database is the truth, so the stream polls it (one cheap query a second per open page) and
sends the submission whenever its state, queue position or figures differ from the last message;
a comment keeps idle connections open through proxies. The stream ends after the final state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from starlette.concurrency import run_in_threadpool

from edc import db
from edc.config import Settings
from edc.db import database_errors
from edc.errors import ServiceUnavailable
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


async def submission_stream(
    settings: Settings,
    submission_id: int,
    viewer: Identity,
    *,
    is_disconnected: Callable[[], Awaitable[bool]],
    poll_s: float = POLL_S,
) -> AsyncIterator[str]:
    """``submission`` events while it moves, then one ``end`` event after its final state."""
    last_payload: str | None = None
    last_sent = time.monotonic()
    sequence = 0
    # Browsers reconnect after this many milliseconds if the connection drops.
    yield "retry: 3000\n\n"
    while not await is_disconnected():
        try:
            current = await run_in_threadpool(snapshot, settings, submission_id, viewer)
        except ServiceUnavailable as exc:
            yield f": {exc.message}\n\n"
            await anyio.sleep(poll_s)
            continue
        payload = current.model_dump_json()
        if payload != last_payload:
            sequence += 1
            yield format_event("submission", payload, event_id=sequence)
            last_payload, last_sent = payload, time.monotonic()
        elif time.monotonic() - last_sent >= KEEPALIVE_S:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        if current.status.is_final:
            yield format_event("end", "{}")
            return
        await anyio.sleep(poll_s)

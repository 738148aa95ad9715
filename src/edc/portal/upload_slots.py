"""Uploads in progress per participant, bounded across the portals.

The upload pace (:class:`edc.portal.upload.Pace`) cuts a body slower than the minimum rate, but
one participant could still hold many connections open, each sending at exactly that rate. So
each upload holds a slot, claimed before its body is read and given back however it ends.

The slots are a Redis sorted set per participant: a member per upload, scored by the end of its
lease, which the portal holding it renews while the upload runs; a portal that dies stops
renewing, and its slots lapse within ``LEASE_S``. While Redis does not answer, each portal
counts its own uploads instead (the cap then holds per portal process).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import anyio.to_thread
import redis

from edc.config import Settings
from edc.errors import RateLimited, ServiceUnavailable
from edc.scheduler.connection import redis_connection, redis_errors

log = logging.getLogger(__name__)

# Far longer than a renewal takes, short enough that a dead portal's slots soon come back.
LEASE_S = 60
RENEW_S = LEASE_S / 4
RETRY_AFTER_S = 10

# KEYS[1]: the participant's set; ARGV: cap, member, lease (s). Redis's clock, so the portals'
# clocks need not agree. 1: claimed; 0: the participant has ``cap`` live uploads.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]) + 1)
return 1
"""
# KEYS[1]: the set; ARGV: member, lease (s). A lapsed member is not brought back (XX).
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]) + 1)
return 1
"""


def slots_key(settings: Settings, user_id: int) -> str:
    return f"edc:{settings.deployment_id}:uploads-in-flight:{user_id}"


@dataclass(frozen=True)
class _Slot:
    user_id: int
    member: str
    in_redis: bool  # False: counted in this process (Redis did not answer)


class UploadSlots:
    """The upload slots of the participants, as one portal process claims them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._local: Counter[int] = Counter()
        self._lock = threading.Lock()

    @asynccontextmanager
    async def held(self, user_id: int) -> AsyncIterator[None]:
        """A slot for one upload of ``user_id`` while the block runs; RateLimited when the
        participant has as many uploads in progress as allowed."""
        slot = await anyio.to_thread.run_sync(self._claim, user_id)
        renewing = asyncio.create_task(self._keep_renewed(slot)) if slot.in_redis else None
        try:
            yield
        finally:
            if renewing is not None:
                renewing.cancel()
            # Given back even when the request is being cancelled (the client went away).
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._release, slot)

    def _claim(self, user_id: int) -> _Slot:
        member = uuid.uuid4().hex
        cap = self.settings.uploads_in_flight_per_user
        try:
            with redis_errors():
                claim = redis_connection(self.settings).register_script(_CLAIM)
                claimed = claim(
                    keys=[slots_key(self.settings, user_id)], args=[cap, member, LEASE_S]
                )
        except ServiceUnavailable as exc:
            log.warning("uploads in progress counted by this portal alone: %s", exc.message)
            return self._claim_here(user_id, member)
        if not claimed:
            raise self._refusal()
        return _Slot(user_id, member, in_redis=True)

    def _claim_here(self, user_id: int, member: str) -> _Slot:
        with self._lock:
            if self._local[user_id] >= self.settings.uploads_in_flight_per_user:
                raise self._refusal()
            self._local[user_id] += 1
        return _Slot(user_id, member, in_redis=False)

    def _refusal(self) -> RateLimited:
        cap = self.settings.uploads_in_flight_per_user
        return RateLimited(
            f"You have {cap} upload{'s' if cap != 1 else ''} in progress, the most one participant "
            "may have at once; wait for one to finish, then try again.",
            retry_after_s=RETRY_AFTER_S,
        )

    async def _keep_renewed(self, slot: _Slot) -> None:
        while True:
            await anyio.sleep(RENEW_S)
            try:
                await anyio.to_thread.run_sync(self._renew, slot)
            except (ServiceUnavailable, redis.exceptions.RedisError) as exc:
                # The upload goes on; at worst its slot lapses early.
                log.warning("upload slot of user %d not renewed: %s", slot.user_id, exc)

    def _renew(self, slot: _Slot) -> None:
        with redis_errors():
            renew = redis_connection(self.settings).register_script(_RENEW)
            renew(keys=[slots_key(self.settings, slot.user_id)], args=[slot.member, LEASE_S])

    def _release(self, slot: _Slot) -> None:
        if not slot.in_redis:
            with self._lock:
                self._local[slot.user_id] -= 1
                if self._local[slot.user_id] <= 0:
                    del self._local[slot.user_id]
            return
        try:
            with redis_errors():
                key = slots_key(self.settings, slot.user_id)
                redis_connection(self.settings).zrem(key, slot.member)
        except ServiceUnavailable as exc:
            log.warning("upload slot of user %d left to lapse: %s", slot.user_id, exc.message)

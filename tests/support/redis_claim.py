"""Each test process's own Redis database index, claimed with a key so that test runs sharing
this machine's Redis never use one index at once."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import redis

CLAIM_KEY = "edc:test-run-owner"
CLAIM_TTL_S = 6 * 3600
# Index 0 is left to humans.
INDEXES = range(1, 16)


class ClaimLost(Exception):
    """Another test run claimed this process's index while its claim key was gone."""


@dataclass(frozen=True)
class RedisClaim:
    url: str
    token: str  # the claim key's value: whose index it is

    @classmethod
    def take(cls, host_url: str) -> RedisClaim | None:
        """Claim the first free index on the server at ``host_url``; None when all are taken."""
        token = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        for index in INDEXES:
            with redis.Redis.from_url(f"{host_url}/{index}") as conn:
                if conn.set(CLAIM_KEY, token, nx=True, ex=CLAIM_TTL_S):
                    return cls(f"{host_url}/{index}", token)
        return None

    def flush(self) -> None:
        """Empty the index but for the claim, in one transaction (no moment unclaimed); raises
        ClaimLost when the key held another run's token."""
        with redis.Redis.from_url(self.url) as conn, conn.pipeline(transaction=True) as pipe:
            pipe.get(CLAIM_KEY)
            pipe.flushdb()
            pipe.set(CLAIM_KEY, self.token, ex=CLAIM_TTL_S)
            holder, _, _ = pipe.execute()
        if holder is not None and holder.decode() != self.token:
            raise ClaimLost(f"another test run ({holder.decode()}) claimed {self.url}")

    def release(self) -> None:
        with redis.Redis.from_url(self.url) as conn:
            conn.flushdb()

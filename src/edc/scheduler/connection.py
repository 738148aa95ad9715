"""The job queue's Redis connection, and its errors translated into the project's own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from edc.config import Settings
from edc.errors import ServiceUnavailable

# One client (and its connection pool) per (URL, process): a pool per call would leave sockets
# open until the garbage collector finds them, and a forked work-horse must not share sockets.
_clients: dict[tuple[str, int], redis.Redis] = {}


def redis_connection(settings: Settings) -> redis.Redis:
    if not settings.redis_url:
        raise ServiceUnavailable(
            "No Redis is configured: set EDC_REDIS_URL, or start everything with `edc up`, "
            "which runs an embedded Redis."
        )
    key = (settings.redis_url, os.getpid())
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=5,
            socket_timeout=30,
            health_check_interval=30,
        )
    return client


@contextmanager
def redis_errors() -> Iterator[None]:
    """Translate redis-py's errors into the project's own where they enter."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise ServiceUnavailable(f"The job queue (Redis) is unreachable: {exc}") from exc


def ping(settings: Settings) -> None:
    with redis_errors():
        redis_connection(settings).ping()

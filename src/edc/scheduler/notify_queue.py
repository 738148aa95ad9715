"""Notifications on the queue: one small RQ job per message, on a queue of its own.

Every worker, whatever its class, serves this queue before the participants' (see
:mod:`edc.scheduler.fair_worker`): a delivery takes seconds, so it runs between two evaluations
and never waits behind hours of them. The queue's name is outside ``<queue_name>.``, where only
the evaluation queues live (:func:`edc.scheduler.producer.our_queues`).

The job carries the track's name and the message, never the webhook URL: that is a secret, and
RQ keeps job arguments in Redis and writes descriptions into its logs. The job reads the URL
from the database when it runs (so a URL switched off since is not sent to).
"""

from __future__ import annotations

from typing import Any

import redis
from rq import Queue

from edc.config import Settings
from edc.scheduler.connection import redis_connection, redis_errors
from edc.scheduler.producer import FAILURE_TTL_S

JOB_FUNCTION = "edc.services.notifications.deliver"
# Bounds a delivery with all its retries (edc.services.notifications); RQ's kill switch.
JOB_TIMEOUT_S = 120


def queue_name(settings: Settings) -> str:
    return f"{settings.queue_name}-notifications"


def notification_queue(settings: Settings, connection: redis.Redis | None = None) -> Queue:
    return Queue(queue_name(settings), connection=connection or redis_connection(settings))


def enqueue_notification(settings: Settings, track: str, message: dict[str, Any]) -> str:
    """Queue ``message`` for the webhook of ``track``; returns the job id."""
    with redis_errors():
        job = notification_queue(settings).enqueue_call(
            JOB_FUNCTION,
            args=(track, message),
            timeout=JOB_TIMEOUT_S,
            result_ttl=0,
            failure_ttl=FAILURE_TTL_S,
            description=f"notify track {track}: {message.get('event')}",
        )
    return str(job.id)

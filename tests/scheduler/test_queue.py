"""The queue carries only ids, and one submission never has two live jobs for one attempt."""

from __future__ import annotations

import pytest
from rq.job import Job

from edc.config import Settings
from edc.errors import ServiceUnavailable
from edc.scheduler import connection, producer


def test_enqueue_carries_only_the_id(sqlite_settings: Settings) -> None:
    job_id = producer.enqueue_submission(sqlite_settings, 41, attempt=2)
    assert job_id == "submission-41-attempt-2"
    job = Job.fetch(job_id, connection=connection.redis_connection(sqlite_settings))
    assert job.func_name == producer.JOB_FUNCTION
    assert job.args == (41,)
    assert job.kwargs == {"attempt": 2}
    assert job.timeout == sqlite_settings.job_timeout_s


def test_second_enqueue_of_same_attempt_is_a_no_op(sqlite_settings: Settings) -> None:
    producer.enqueue_submission(sqlite_settings, 7)
    producer.enqueue_submission(sqlite_settings, 7)
    assert producer.queued_job_ids(sqlite_settings) == ["submission-7-attempt-1"]


def test_a_new_attempt_is_a_new_job(sqlite_settings: Settings) -> None:
    producer.enqueue_submission(sqlite_settings, 7, attempt=1)
    producer.enqueue_submission(sqlite_settings, 7, attempt=2)
    assert producer.queued_job_ids(sqlite_settings) == [
        "submission-7-attempt-1",
        "submission-7-attempt-2",
    ]


def test_unreachable_redis_is_a_service_error(sqlite_settings: Settings) -> None:
    broken = sqlite_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with pytest.raises(ServiceUnavailable, match="Redis"):
        producer.enqueue_submission(broken, 1)
    with pytest.raises(ServiceUnavailable, match="Redis"):
        connection.ping(broken)


def test_missing_redis_url_explains_how_to_get_one(sqlite_settings: Settings) -> None:
    unset = sqlite_settings.model_copy(update={"redis_url": None})
    with pytest.raises(ServiceUnavailable, match="EDC_REDIS_URL"):
        connection.ping(unset)

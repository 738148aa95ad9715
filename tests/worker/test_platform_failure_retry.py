"""A late harness is the platform's failure, and the worker retries it: the submission goes back to
the queue as a fresh attempt, and once the attempts are spent it ends failed as infrastructure,
giving the participant's daily allowance back.

Everything is real: RQ jobs taken by a worker in burst mode, PostgreSQL, Redis, the kvcache example
in the bubblewrap sandbox on a small task with a serving round. The harness is made late the way
an operator's setting does it: a send-lag limit (EDC_SERVING_SEND_LAG_LIMIT_MS) far below what any
send achieves, so every serving round fails the evaluation with the harness's own sentence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from edc import db
from edc.config import Settings, get_settings
from edc.models import utcnow
from edc.scheduler import fair_worker, producer
from edc.services import rules
from edc.status import FailureReason, SubmissionStatus
from tests.harness.conftest import ONE_SERVING_ROUND, write_task
from tests.support.competition import add_submission, make_user
from tests.support.databases import postgres_only
from tests.support.platform import kvcache_zip
from tests.support.rows import get_submission

# A nanosecond: no send is that punctual (writing a generate alone takes microseconds).
LATE_MS = 1e-6
MAX_ATTEMPTS = 2


@pytest.fixture
def worker_settings(settings: Settings, tmp_path: Path) -> Settings:
    task = write_task(
        tmp_path / "task", timed=1, throughput=1, repeats=1, warmup=1, extra_toml=ONE_SERVING_ROUND
    )
    return settings.model_copy(
        update={
            "task_dir": task.root,
            "sandbox": "bwrap",
            "max_attempts": MAX_ATTEMPTS,
            # The serving round is in the hidden run only; the public check would add nothing.
            "public_check": False,
            "serving_send_lag_limit_ms": LATE_MS,
        }
    )


@pytest.fixture
def late_harness(
    worker_environment: None, worker_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The work-horse's settings beyond those ``worker_environment`` carries."""
    monkeypatch.setenv("EDC_SERVING_SEND_LAG_LIMIT_MS", repr(LATE_MS))
    monkeypatch.setenv("EDC_PUBLIC_CHECK", "false")
    get_settings.cache_clear()
    assert get_settings().serving_send_lag_limit_ms == LATE_MS
    yield
    get_settings.cache_clear()


def _stored_kvcache(settings: Settings) -> tuple[str, str]:
    """The kvcache example as an uploaded archive: (file path, sha256)."""
    data = kvcache_zip()
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    (settings.uploads_dir / "kvcache.zip").write_bytes(data)
    return "uploads/kvcache.zip", hashlib.sha256(data).hexdigest()


def _used_today(settings: Settings, user_id: int) -> int:
    with db.session_scope(settings) as session:
        usage = rules.usage(
            session, rules.Limits.from_settings(settings), user_id=user_id, now=utcnow()
        )
    return usage.used_today


def _work(settings: Settings, max_jobs: int | None = None) -> None:
    worker = fair_worker.make_worker(settings, name="retry-test", hardware_class="cpu")
    assert worker.work(burst=True, max_jobs=max_jobs)


@pytest.mark.usefixtures("late_harness")
@postgres_only
def test_a_late_harness_is_retried_then_failed_as_the_platforms(
    worker_settings: Settings,
) -> None:
    s = worker_settings
    alice, _ = make_user(s, "alice", password=None)
    file_path, sha256 = _stored_kvcache(s)
    submission_id = add_submission(
        s,
        alice,
        status=SubmissionStatus.QUEUED,
        file_path=file_path,
        sha256=sha256,
        attempt=1,
    )
    producer.enqueue_submission(s, submission_id, 1)
    assert _used_today(s, alice) == 1  # waiting, it uses up one of the day's submissions

    # The first attempt: the serving round's sends are "late", so the run fails as the
    # platform's, and the worker hands the submission back as attempt 2.
    _work(s, max_jobs=1)
    row = get_submission(s, submission_id)
    assert (row.status, row.attempt, row.worker_id) == (SubmissionStatus.QUEUED, 2, None)
    assert row.failure_reason is None and row.finished_at is None
    # The organisers' logs keep why: the harness's own sentence, which names no retry.
    assert row.logs is not None
    assert "could not send the serving requests on schedule" in row.logs
    assert "the machine or the harness was late, not the submission" in row.logs
    assert producer.queued_job_ids(s) == [f"submission-{submission_id}-attempt-2"]
    assert _used_today(s, alice) == 1

    # The last attempt fails alike: no more retries, failed as infrastructure.
    _work(s)
    row = get_submission(s, submission_id)
    assert (row.status, row.attempt) == (SubmissionStatus.FAILED, MAX_ATTEMPTS)
    assert row.failure_reason is FailureReason.INFRASTRUCTURE
    assert row.failure_message is not None
    assert row.failure_message.startswith(
        "On the hidden prompts: The platform failed during the evaluation"
    )
    assert row.result_metrics is None
    assert producer.queued_job_ids(s) == []
    # Not the participant's failure: it no longer counts against the day's allowance.
    assert _used_today(s, alice) == 0

"""Claiming and recording on the real databases: exactly one owner, late results discarded."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from edc.config import Settings
from edc.status import FailureReason, SubmissionStatus
from edc.worker import executor
from tests.support.rows import get_submission, insert_submission


def test_only_one_of_many_concurrent_claims_wins(settings: Settings) -> None:
    submission_id = insert_submission(settings)
    with ThreadPoolExecutor(max_workers=8) as pool:
        wins = list(
            pool.map(
                lambda n: executor.claim(settings, submission_id, attempt=1, worker_id=f"w{n}"),
                range(8),
            )
        )
    assert wins.count(True) == 1
    row = get_submission(settings, submission_id)
    assert row.status is SubmissionStatus.PROCESSING
    assert row.worker_id == f"w{wins.index(True)}"
    assert row.started_at is not None


def test_claim_of_an_old_attempt_does_nothing(settings: Settings) -> None:
    submission_id = insert_submission(settings, attempt=2)
    assert not executor.claim(settings, submission_id, attempt=1, worker_id="late")
    assert get_submission(settings, submission_id).status is SubmissionStatus.QUEUED


def test_claim_of_a_finished_submission_does_nothing(settings: Settings) -> None:
    submission_id = insert_submission(settings, status=SubmissionStatus.COMPLETED)
    assert not executor.claim(settings, submission_id, attempt=None, worker_id="w")
    assert get_submission(settings, submission_id).status is SubmissionStatus.COMPLETED


def test_late_result_of_a_superseded_attempt_is_discarded(settings: Settings) -> None:
    submission_id = insert_submission(settings, attempt=3, status=SubmissionStatus.PROCESSING)
    late = executor.Outcome(
        SubmissionStatus.FAILED, None, "old logs", FailureReason.CRASHED, "old attempt"
    )
    executor._record(settings, submission_id, 2, late)
    row = get_submission(settings, submission_id)
    assert row.status is SubmissionStatus.PROCESSING
    assert row.failure_message is None

    current = executor.Outcome(SubmissionStatus.COMPLETED, {"wall_s": 1.5}, "logs")
    executor._record(settings, submission_id, 3, current)
    row = get_submission(settings, submission_id)
    assert row.status is SubmissionStatus.COMPLETED
    assert row.result_metrics == {"wall_s": 1.5}
    assert row.finished_at is not None


def test_logs_are_truncated_when_recorded(settings: Settings) -> None:
    submission_id = insert_submission(settings, status=SubmissionStatus.PROCESSING)
    huge = "x" * (5 * settings.log_cap_bytes)
    executor._record(
        settings, submission_id, 1, executor.Outcome(SubmissionStatus.COMPLETED, {}, huge)
    )
    logs = get_submission(settings, submission_id).logs
    assert logs is not None
    assert len(logs) < 3 * settings.log_cap_bytes
    assert "more characters dropped" in logs

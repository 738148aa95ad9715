"""Claiming and recording on the real databases: exactly one owner, late results discarded."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from edc import db
from edc.config import Settings
from edc.models import FailureReason, Submission, SubmissionStatus
from edc.worker import executor


def _insert(settings: Settings, **values: object) -> int:
    with db.session_scope(settings) as session:
        row = Submission(
            file_path="uploads/x.zip",
            sha256="0" * 64,
            size_bytes=1,
            original_filename="x.zip",
            **values,
        )
        session.add(row)
        session.flush()
        return row.id


def _get(settings: Settings, submission_id: int) -> Submission:
    with db.session_scope(settings) as session:
        row = session.get(Submission, submission_id)
        assert row is not None
        return row


def test_only_one_of_many_concurrent_claims_wins(settings: Settings) -> None:
    submission_id = _insert(settings)
    with ThreadPoolExecutor(max_workers=8) as pool:
        wins = list(
            pool.map(
                lambda n: executor.claim(settings, submission_id, attempt=1, worker_id=f"w{n}"),
                range(8),
            )
        )
    assert wins.count(True) == 1
    row = _get(settings, submission_id)
    assert row.status is SubmissionStatus.PROCESSING
    assert row.worker_id == f"w{wins.index(True)}"
    assert row.started_at is not None


def test_claim_of_an_old_attempt_does_nothing(settings: Settings) -> None:
    submission_id = _insert(settings, attempt=2)
    assert not executor.claim(settings, submission_id, attempt=1, worker_id="late")
    assert _get(settings, submission_id).status is SubmissionStatus.QUEUED


def test_claim_of_a_finished_submission_does_nothing(settings: Settings) -> None:
    submission_id = _insert(settings, status=SubmissionStatus.COMPLETED)
    assert not executor.claim(settings, submission_id, attempt=None, worker_id="w")
    assert _get(settings, submission_id).status is SubmissionStatus.COMPLETED


def test_late_result_of_a_superseded_attempt_is_discarded(settings: Settings) -> None:
    submission_id = _insert(settings, attempt=3, status=SubmissionStatus.PROCESSING)
    late = executor.Outcome(
        SubmissionStatus.FAILED, None, "old logs", FailureReason.CRASHED, "old attempt"
    )
    executor._record(settings, submission_id, 2, late)
    row = _get(settings, submission_id)
    assert row.status is SubmissionStatus.PROCESSING
    assert row.failure_message is None

    current = executor.Outcome(SubmissionStatus.COMPLETED, {"wall_s": 1.5}, "logs")
    executor._record(settings, submission_id, 3, current)
    row = _get(settings, submission_id)
    assert row.status is SubmissionStatus.COMPLETED
    assert row.result_metrics == {"wall_s": 1.5}
    assert row.finished_at is not None


def test_logs_are_truncated_when_recorded(settings: Settings) -> None:
    submission_id = _insert(settings, status=SubmissionStatus.PROCESSING)
    huge = "x" * (5 * settings.log_cap_bytes)
    executor._record(
        settings, submission_id, 1, executor.Outcome(SubmissionStatus.COMPLETED, {}, huge)
    )
    logs = _get(settings, submission_id).logs
    assert logs is not None
    assert len(logs) < 3 * settings.log_cap_bytes
    assert "more characters dropped" in logs

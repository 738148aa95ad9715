"""A final ranking run for real: one RQ job, taken in burst mode by a worker of the class from its
home queue, re-measuring real decoders in the real bubblewrap sandbox on a small task.

The provisional board is seeded with fabricated results (the way a lucky run would have left it):
a decoder that sleeps 30–50 ms before every step once scored 0.5 ms per token; an honest one
without the sleeps scored 5.0; a decoder that answers token 0 whatever is asked was scored
correct. Re-measured side by side, the honest one leads, the sleepy one follows, and the wrong
one is out of the final, failed.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from edc import db
from edc.config import Settings
from edc.models import Final, Measurement, Submission, utcnow
from edc.scheduler import fair_worker
from edc.services import finals, leaderboard, rules
from edc.status import FailureReason, FinalStatus, MeasurementStatus
from edc.worker import final_run
from edc.worker.executor import Outcome
from tests.harness.conftest import example_source, write_task
from tests.support.competition import add_submission, make_user, metrics
from tests.support.databases import postgres_only

SLEEPY = (
    example_source("baseline")
    + """

import random as _random
import time as _time

_honest_step = Decoder.step


def _sleepy_step(self, requests):
    _time.sleep(0.03 + 0.02 * _random.random())
    yield from _honest_step(self, requests)


Decoder.step = _sleepy_step
"""
)
WRONG = """
class Decoder:
    def __init__(self, model_dir):
        pass

    def step(self, requests):
        for request in requests:
            yield request.id, [0]
"""


@pytest.fixture
def worker_settings(settings: Settings, tmp_path: Path) -> Settings:
    """The run's settings with a small task and the real bubblewrap sandbox."""
    task = write_task(tmp_path / "task", max_new_tokens=8, timed=2, throughput=2, repeats=2)
    return settings.model_copy(update={"task_dir": task.root, "sandbox": "bwrap"})


def _stored(settings: Settings, name: str, source: str) -> tuple[str, str]:
    """A zip holding ``submission.py`` in the uploads directory: (file path, sha256)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("submission.py", source)
    data = buffer.getvalue()
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    (settings.uploads_dir / f"{name}.zip").write_bytes(data)
    return f"uploads/{name}.zip", hashlib.sha256(data).hexdigest()


def _rows(settings: Settings) -> dict[int, dict[str, Any]]:
    with db.session_scope(settings) as session:
        return {
            row.id: {c.name: getattr(row, c.name) for c in Submission.__table__.columns}
            for row in session.scalars(select(Submission))
        }


@pytest.mark.usefixtures("worker_environment")
@pytest.mark.timing  # an honest decoder ranked against a sleeping one
@postgres_only
def test_a_final_remeasures_side_by_side_and_ranks_by_the_pooled_medians(
    worker_settings: Settings,
) -> None:
    s = worker_settings
    alice, bob, carol = (make_user(s, name, password=None)[0] for name in ("alice", "bob", "carol"))
    sleepy_path, sleepy_sha = _stored(s, "sleepy", SLEEPY)
    honest_path, honest_sha = _stored(s, "honest", example_source("baseline"))
    wrong_path, wrong_sha = _stored(s, "wrong", WRONG)
    lucky = add_submission(
        s, alice, file_path=sleepy_path, sha256=sleepy_sha, result_metrics=metrics(0.5)
    )
    honest = add_submission(
        s, bob, file_path=honest_path, sha256=honest_sha, result_metrics=metrics(5.0)
    )
    wrong = add_submission(
        s, carol, file_path=wrong_path, sha256=wrong_sha, result_metrics=metrics(6.0)
    )
    ranking = leaderboard.task_ranking(s)
    with db.session_scope(s) as session:
        provisional = leaderboard.compute(session, ranking)
    assert [e.submission_id for e in provisional.entries] == [lucky, honest, wrong]
    rows_before = _rows(s)
    now = utcnow()
    with db.session_scope(s) as session:
        usage_before = [
            rules.usage(session, rules.Limits.from_settings(s), user_id=u, now=now)
            for u in (alice, bob, carol)
        ]

    final = finals.finalize(s, top_k=3, rounds=2, requested_by="root")
    worker = fair_worker.make_worker(s, name="final-test", hardware_class="cpu")
    assert worker.work(burst=True)

    with db.session_scope(s) as session:
        done = session.get(Final, final.id)
        assert done is not None
        assert done.status is FinalStatus.COMPLETED, done.message
        measurements = session.scalars(
            select(Measurement).where(Measurement.final_id == final.id)
        ).all()
        board = finals.board(session, done)
    # One worker took every measurement, round 1 of every entry before round 2.
    assert {m.worker_id for m in measurements} == {"final-test"} == {done.worker_id}
    taken = sorted(measurements, key=lambda m: (m.started_at, m.id))
    assert [(m.round, m.submission_id) for m in taken] == [
        (r, sid) for r in (1, 2) for sid in (lucky, honest, wrong)
    ]
    by_status = {(m.submission_id, m.status) for m in measurements}
    assert by_status == {
        (lucky, MeasurementStatus.COMPLETED),
        (honest, MeasurementStatus.COMPLETED),
        (wrong, MeasurementStatus.FAILED),
    }
    assert {m.failure_reason for m in measurements if m.submission_id == wrong} == {
        FailureReason.WRONG_OUTPUT
    }

    # The final order is by the medians of the re-measurements.
    assert [(st.participant, st.entry.rank if st.entry else None) for st in board.ranked] == [
        ("bob", 1),
        ("alice", 2),
    ]
    honest_entry, sleepy_entry = (st.entry for st in board.ranked)
    assert honest_entry is not None and sleepy_entry is not None
    assert honest_entry.runs == sleepy_entry.runs == 2
    # A sleep of 30–50 ms per token is a floor; the honest decoder's own time is the machine's
    # (over 30 ms on a loaded one), so only the order above speaks for it.
    assert sleepy_entry.score >= 30.0
    scores = {
        sid: sorted(m.score for m in measurements if m.submission_id == sid and m.score)
        for sid in (lucky, honest)
    }
    assert honest_entry.score == pytest.approx(sum(scores[honest]) / 2)
    assert [(st.participant, st.out) for st in board.unranked] == [("carol", "failed")]

    # Re-measurements are attached to the submissions, not new ones: rows and limits unchanged.
    assert _rows(s) == rows_before
    with db.session_scope(s) as session:
        assert [
            rules.usage(session, rules.Limits.from_settings(s), user_id=u, now=now)
            for u in (alice, bob, carol)
        ] == (usage_before)
        assert [e.submission_id for e in leaderboard.compute(session, ranking).entries] == [
            lucky,
            honest,
            wrong,
        ]


def test_the_job_boundary_marks_the_final_failed_on_any_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = make_user(settings, "alice", password=None)[0]
    add_submission(settings, alice, result_metrics=metrics(1.0))
    final = finals.finalize(settings, top_k=1, rounds=1)

    def broken(*_args: object) -> None:
        raise RuntimeError("the plan is unreadable")

    monkeypatch.setattr(final_run, "_next", broken)
    assert final_run.run(settings, final.id, worker_id="w") is FinalStatus.FAILED
    assert final_run.run(settings, final.id, worker_id="w") is None  # not queued: not ours
    done = finals.get(settings, final.id)
    assert done.status is FinalStatus.FAILED and done.finished_at is not None
    assert done.message is not None
    assert "internal error (RuntimeError: the plan is unreadable)" in done.message


def test_an_archive_that_cannot_be_fetched_is_the_platforms_failure(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive is gone from disk: measured as an infrastructure failure, not the entry's."""
    tries: list[int] = []
    measure = final_run._measure

    def counted(*args: Any) -> Outcome:
        tries.append(1)
        return measure(*args)

    monkeypatch.setattr(final_run, "_measure", counted)
    alice = make_user(settings, "alice", password=None)[0]
    entry = add_submission(
        settings, alice, result_metrics=metrics(1.0), file_path="uploads/gone.zip"
    )
    final = finals.finalize(settings, top_k=1, rounds=2)
    # Never published: a published final never changes, and this one lacks a measurement the
    # entry did not lose.
    assert final_run.run(settings, final.id, worker_id="w") is FinalStatus.FAILED
    with db.session_scope(settings) as session:
        done = finals.existing(session, final.id)
        assert done.message is not None
        # Tried again as a submission would be, then the final stops: without it, it cannot be
        # published, so the second round is not taken for nothing.
        assert done.message.startswith(
            f"1 measurement on w, then the platform failed to measure submission {entry} at "
            "every try; the final stopped there"
        )
        statuses = session.scalars(
            select(Measurement.status).where(Measurement.final_id == final.id)
        ).all()
        assert sorted(s.value for s in statuses) == ["failed", "pending"]
        board = finals.board(session, done)
    assert len(tries) == settings.max_attempts
    assert board.ranked == []
    (standing,) = board.unranked
    # Its second round was never taken: the final stopped at the first.
    assert (standing.out, standing.failure_reason) == ("pending", FailureReason.INFRASTRUCTURE)
    # So the track may be finalized again, once the cause is mended.
    again = finals.finalize(settings, top_k=1, rounds=1)
    assert again.id != final.id and again.status is FinalStatus.QUEUED

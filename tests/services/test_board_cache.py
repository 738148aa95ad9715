"""The leaderboard is recomputed exactly when a finished result changes, whoever wrote it: the
database's triggers move the counter, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from edc import changes, db
from edc.config import Settings
from edc.models import utcnow
from edc.services import board_cache
from edc.services.leaderboard import Leaderboard, Ranking
from edc.status import SubmissionStatus
from tests.support.competition import add_submission, make_user, metrics

LOWER = Ranking(metric="latency.tpot_ms.p50", direction="lower")


def current(settings: Settings) -> Leaderboard:
    with db.session_scope(settings) as session:
        return board_cache.current(session, LOWER)


def counter(settings: Settings) -> int | None:
    with db.session_scope(settings) as session:
        return changes.counter(session)


def written_elsewhere(settings: Settings, sql: str, **params: object) -> None:
    """A write as another process would make it: plain SQL, no service function involved."""
    with db.session_scope(settings) as session:
        session.execute(text(sql), params)


def test_the_board_is_kept_until_a_result_changes(settings: Settings) -> None:
    alice = make_user(settings, "alice", password=None)[0]
    first = add_submission(settings, alice, result_metrics=metrics(5.0))
    board = current(settings)
    assert [e.submission_id for e in board.entries] == [first]
    assert current(settings) is board  # nothing changed: not recomputed

    # Uploads, claims and heartbeats do not move it.
    before = counter(settings)
    queued = add_submission(settings, alice, status=SubmissionStatus.QUEUED)
    written_elsewhere(
        settings, "UPDATE submissions SET status = 'processing' WHERE id = :id", id=queued
    )
    written_elsewhere(
        settings, "UPDATE submissions SET heartbeat_at = :t WHERE id = :id", t=utcnow(), id=queued
    )
    assert counter(settings) == before
    assert current(settings) is board

    # A result written by a worker elsewhere appears at once.
    better = add_submission(settings, alice, result_metrics=metrics(2.0))
    assert counter(settings) != before
    assert [e.submission_id for e in current(settings).entries] == [better]


def test_moderation_and_renames_written_elsewhere_show_at_once(settings: Settings) -> None:
    alice = make_user(settings, "alice", password=None)[0]
    bob = make_user(settings, "bob", password=None)[0]
    alice_run = add_submission(settings, alice, result_metrics=metrics(3.0))
    add_submission(settings, bob, result_metrics=metrics(4.0))
    assert [e.participant for e in current(settings).entries] == ["alice", "bob"]

    written_elsewhere(
        settings, "UPDATE submissions SET disqualified = true WHERE id = :id", id=alice_run
    )
    assert [e.participant for e in current(settings).entries] == ["bob"]

    written_elsewhere(settings, "UPDATE users SET name = 'robert' WHERE id = :id", id=bob)
    assert [e.participant for e in current(settings).entries] == ["robert"]

    written_elsewhere(settings, "DELETE FROM submissions WHERE user_id = :id", id=bob)
    assert current(settings).entries == []


def test_emptied_tables_never_bring_back_a_cached_board(settings: Settings) -> None:
    alice = make_user(settings, "alice", password=None)[0]
    add_submission(settings, alice, result_metrics=metrics(3.0))
    assert len(current(settings).entries) == 1
    old = counter(settings)

    # Everything deleted, counters too (as a restore or a test's clean-up does), then one result:
    # the counter restarts at a random value, not at the one the cached board was computed at.
    written_elsewhere(settings, "DELETE FROM submissions")
    written_elsewhere(settings, "DELETE FROM change_counters")
    assert counter(settings) is None
    assert current(settings).entries == []
    bob = make_user(settings, "bob", password=None)[0]
    add_submission(settings, bob, result_metrics=metrics(9.0))
    assert counter(settings) not in (None, old)
    assert [e.participant for e in current(settings).entries] == ["bob"]


def test_a_large_board_is_computed_again_in_the_background(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a thousand participants a computation takes tens of milliseconds: readers of a large
    board get the last one meanwhile, one computation at a time, and then the new one."""
    monkeypatch.setattr(board_cache, "LARGE_BOARD_ENTRIES", 2)
    alice = make_user(settings, "alice", password=None)[0]
    bob = make_user(settings, "bob", password=None)[0]
    add_submission(settings, alice, result_metrics=metrics(3.0))
    add_submission(settings, bob, result_metrics=metrics(4.0))
    board = current(settings)
    assert [e.participant for e in board.entries] == ["alice", "bob"]

    computed = board_cache.compute
    release = threading.Event()
    computations = []

    def held_back(session: Session, ranking: Ranking) -> Leaderboard:
        computations.append(ranking)
        release.wait(timeout=30)
        return computed(session, ranking)

    monkeypatch.setattr(board_cache, "compute", held_back)
    faster = add_submission(settings, bob, result_metrics=metrics(1.0))
    assert current(settings) is board  # the last one, not a wait for the computation
    assert eventually(lambda: len(computations) == 1)
    assert current(settings) is board
    assert len(computations) == 1  # one at a time
    release.set()
    assert eventually(lambda: current(settings) is not board)
    leader = current(settings).entries[0]
    assert (leader.participant, leader.submission_id) == ("bob", faster)


def eventually(condition: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_small_board_is_always_current(settings: Settings) -> None:
    alice = make_user(settings, "alice", password=None)[0]
    add_submission(settings, alice, result_metrics=metrics(3.0))
    assert len(current(settings).entries) < board_cache.LARGE_BOARD_ENTRIES
    better = add_submission(settings, alice, result_metrics=metrics(1.0))
    assert [e.submission_id for e in current(settings).entries] == [better]

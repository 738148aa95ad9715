"""Pooling, on SQLite and PostgreSQL: one participant's runs of one archive are one entry.

The score of an entry is the median of its runs; its interval spans the middle 95% of them,
widened to their own intervals on average; the participant's best entry is ranked.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from edc import db
from edc.config import Settings
from edc.models import utcnow
from edc.services import leaderboard
from edc.services.leaderboard import Ranking, Run, percentile, pool_of
from edc.status import ReviewState
from tests.support.competition import add_submission, bearer, metrics
from tests.support.live_server import People

LOWER = Ranking(metric="latency.tpot_ms.p50", direction="lower")
HIGHER = Ranking(metric="throughput.output_tokens_per_s", direction="higher")
ARCHIVE_A = "a" * 64
ARCHIVE_B = "b" * 64


def board(settings: Settings, ranking: Ranking = LOWER) -> leaderboard.Leaderboard:
    with db.session_scope(settings) as session:
        return leaderboard.compute(session, ranking)


def test_same_archive_pools_into_one_entry_scored_by_the_median_of_all_its_runs(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    t0 = utcnow() - timedelta(hours=3)
    alice, bob = people.alice[0], people.bob[0]
    # Alice's archive A: one lucky run among slow ones. Kept best, it would lead with 1.0.
    first_a = add_submission(
        rules, alice, sha256=ARCHIVE_A, result_metrics=metrics(9.0, (8.5, 9.5)), created_at=t0
    )
    add_submission(
        rules,
        alice,
        sha256=ARCHIVE_A,
        result_metrics=metrics(1.0, (0.9, 1.1)),
        created_at=t0 + timedelta(minutes=1),
    )
    add_submission(
        rules,
        alice,
        sha256=ARCHIVE_A,
        result_metrics=metrics(10.0, (9.0, 11.0)),
        created_at=t0 + timedelta(minutes=2),
    )
    # Bob's one run of 4.0 now leads.
    bob_run = add_submission(
        rules, bob, result_metrics=metrics(4.0, (3.9, 4.1)), created_at=t0 + timedelta(minutes=3)
    )

    result = board(rules)
    assert [(e.participant, e.submission_id, e.score, e.runs) for e in result.entries] == [
        ("bob", bob_run, 4.0, 1),
        ("alice", first_a, 9.0, 3),
    ]
    pooled = result.entries[1]
    expected = pool_of([Run(9.0, 8.5, 9.5), Run(1.0, 0.9, 1.1), Run(10.0, 9.0, 11.0)])
    assert pooled.score_ci == pytest.approx(expected.interval)
    # The middle 95% of 1, 9 and 10 (the own intervals' means, 6.13–7.2, lie inside it).
    assert pooled.score_ci == pytest.approx((percentile([1, 9, 10], 0.025), 9.95))
    assert result.entries[0].score_ci == (3.9, 4.1)  # a single run keeps its own interval
    assert pooled.submitted_at == result.entries[1].submitted_at  # the archive's first run

    api = app_client.get("/api/v1/leaderboard").json()
    assert [(e["participant"], e["score"], e["runs"]) for e in api["entries"]] == [
        ("bob", 4.0, 1),
        ("alice", 9.0, 3),
    ]
    page = app_client.get("/leaderboard").text
    alice_row = page[page.index(f'id="entry-{first_a}"') :].split("</tr>")[0]
    assert 'data-runs="3"' in alice_row and "3×" in alice_row
    bob_row = page[page.index(f'id="entry-{bob_run}"') :].split("</tr>")[0]
    assert "data-runs" not in bob_row
    exported = app_client.get("/api/v1/admin/leaderboard.csv", headers=bearer(people.root[1]))
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["participant"], r["runs"], r["score"]) for r in rows] == [
        ("bob", "1", "4.0"),
        ("alice", "3", "9.0"),
    ]


def test_another_archive_is_another_entry_and_the_better_one_is_ranked(
    rules: Settings, people: People
) -> None:
    alice = people.alice[0]
    t0 = utcnow() - timedelta(hours=3)
    for n, score in enumerate((1.0, 8.0, 9.0)):
        add_submission(
            rules,
            alice,
            sha256=ARCHIVE_A,
            result_metrics=metrics(score),
            created_at=t0 + timedelta(minutes=n),
        )
    archive_b = add_submission(
        rules,
        alice,
        sha256=ARCHIVE_B,
        result_metrics=metrics(5.0),
        created_at=t0 + timedelta(minutes=5),
    )
    (entry,) = board(rules).entries
    assert (entry.submission_id, entry.score, entry.runs) == (archive_b, 5.0, 1)

    # Archive A measured twice more, fast: its median (1, 1, 1, 8, 9 → 1) now beats B's 5.
    for n in range(2):
        add_submission(
            rules,
            alice,
            sha256=ARCHIVE_A,
            result_metrics=metrics(1.0),
            created_at=t0 + timedelta(minutes=10 + n),
        )
    (entry,) = board(rules).entries
    assert (entry.score, entry.runs) == (1.0, 5)


def test_runs_off_the_board_do_not_pool(rules: Settings, people: People) -> None:
    from edc.status import FailureReason, SubmissionStatus

    alice = people.alice[0]
    kept = add_submission(rules, alice, sha256=ARCHIVE_A, result_metrics=metrics(6.0))
    add_submission(rules, alice, sha256=ARCHIVE_A, result_metrics=metrics(1.0, correct=False))
    add_submission(
        rules,
        alice,
        sha256=ARCHIVE_A,
        status=SubmissionStatus.FAILED,
        failure_reason=FailureReason.CRASHED,
        result_metrics=metrics(1.0),
    )
    add_submission(rules, alice, sha256=ARCHIVE_A, result_metrics=metrics(1.0), disqualified=True)
    add_submission(rules, alice, sha256=ARCHIVE_A, result_metrics=metrics(1.0), is_baseline=True)
    result = board(rules)
    assert [(e.submission_id, e.score, e.runs) for e in result.entries] == [(kept, 6.0, 1)]
    assert [e.score for e in result.baselines] == [1.0]


def test_an_equal_pool_submitted_earlier_wins_over_the_best_runs_own_archive(
    rules: Settings, people: People
) -> None:
    """The best single run (archive B, 5.0) is alone, yet archive A, first submitted earlier,
    pools to the same 5.0: the earlier archive is the entry, as for any tie."""
    alice = people.alice[0]
    t0 = utcnow() - timedelta(hours=3)
    first_a = add_submission(
        rules, alice, sha256=ARCHIVE_A, result_metrics=metrics(6.0), created_at=t0
    )
    add_submission(
        rules,
        alice,
        sha256=ARCHIVE_B,
        result_metrics=metrics(5.0),
        created_at=t0 + timedelta(minutes=1),
    )
    for n in range(2):
        add_submission(
            rules,
            alice,
            sha256=ARCHIVE_A,
            result_metrics=metrics(5.0),
            created_at=t0 + timedelta(minutes=2 + n),
        )
    (entry,) = board(rules).entries
    assert (entry.submission_id, entry.score, entry.runs) == (first_a, 5.0, 3)


def test_higher_is_better_pools_and_picks_the_other_way(rules: Settings, people: People) -> None:
    alice = people.alice[0]
    for score in (100.0, 500.0, 120.0):
        add_submission(rules, alice, sha256=ARCHIVE_A, result_metrics=metrics(score))
    single = add_submission(rules, alice, sha256=ARCHIVE_B, result_metrics=metrics(300.0))
    (entry,) = board(rules, HIGHER).entries
    assert (entry.submission_id, entry.score) == (single, 300.0)
    add_submission(rules, alice, sha256=ARCHIVE_A, result_metrics=metrics(600.0))
    (entry,) = board(rules, HIGHER).entries
    assert (entry.score, entry.runs) == (pytest.approx(310.0), 4)  # median of 100 120 500 600


def test_a_pooled_entry_is_flagged_when_any_of_its_runs_is(rules: Settings, people: People) -> None:
    alice = people.alice[0]
    add_submission(rules, alice, sha256=ARCHIVE_A, result_metrics=metrics(3.0))
    add_submission(
        rules, alice, sha256=ARCHIVE_A, result_metrics=metrics(3.5), review=ReviewState.FLAGGED
    )
    (entry,) = board(rules).entries
    assert entry.flagged and entry.runs == 2


def test_pooled_intervals_decide_ties(rules: Settings, people: People) -> None:
    alice, bob = people.alice[0], people.bob[0]
    # Alice's runs agree closely, yet no closer than their own intervals: 4.0–4.4 on average.
    add_submission(rules, alice, sha256=ARCHIVE_A, result_metrics=metrics(4.1, (4.0, 4.4)))
    add_submission(rules, alice, sha256=ARCHIVE_A, result_metrics=metrics(4.2, (4.0, 4.4)))
    add_submission(rules, bob, result_metrics=metrics(4.35, (4.3, 4.5)))
    result = board(rules)
    assert [(e.participant, e.tied_with_above) for e in result.entries] == [
        ("alice", False),
        ("bob", True),
    ]
    assert result.entries[0].score_ci == pytest.approx((4.0, 4.4))


def test_pool_of_matches_the_percentiles_of_postgresql() -> None:
    """percentile() is percentile_cont's rule: interpolated between the neighbours."""
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.025) == pytest.approx(1.075)
    assert percentile([7.0], 0.975) == 7.0
    single = pool_of([Run(3.0, 2.0, 4.0)])
    assert (single.median, single.runs, single.interval) == (3.0, 1, None)
    two = pool_of([Run(3.0), Run(5.0)])
    assert two.median == 4.0 and two.interval == pytest.approx((3.05, 4.95))

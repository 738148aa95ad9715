"""The ranking rules, on SQLite and PostgreSQL: one definition behind the API, page and CSV."""

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
from edc.services.leaderboard import Ranking
from edc.status import FailureReason, SubmissionStatus
from tests.support.competition import add_submission, bearer, bundled_metric, make_user, metrics
from tests.support.live_server import People

LOWER = Ranking(metric="latency.tpot_ms.p50", direction="lower")
HIGHER = Ranking(metric="throughput.output_tokens_per_s", direction="higher")


def board(settings: Settings, ranking: Ranking = LOWER) -> leaderboard.Leaderboard:
    with db.session_scope(settings) as session:
        return leaderboard.compute(session, ranking)


def test_best_correct_per_participant_ranked_with_ties_to_the_earlier(
    rules: Settings, people: People
) -> None:
    t0 = utcnow() - timedelta(hours=5)
    alice, bob = people.alice[0], people.bob[0]
    carol = make_user(rules, "carol", password=None)[0]
    dave = make_user(rules, "dave", password=None)[0]
    add_submission(rules, alice, result_metrics=metrics(9.0), created_at=t0)
    alice_best = add_submission(
        rules, alice, result_metrics=metrics(4.0), created_at=t0 + timedelta(minutes=1)
    )
    # Faster but wrong, failed, cancelled or disqualified: never on the board.
    add_submission(rules, alice, result_metrics=metrics(1.0, correct=False))
    add_submission(
        rules,
        alice,
        status=SubmissionStatus.FAILED,
        failure_reason=FailureReason.WRONG_OUTPUT,
        result_metrics=metrics(0.5),
    )
    add_submission(rules, alice, status=SubmissionStatus.CANCELLED, result_metrics=metrics(0.4))
    add_submission(rules, alice, result_metrics=metrics(0.3), disqualified=True)
    # Bob ties Alice's 4.0 but later: he ranks below her.
    bob_best = add_submission(
        rules, bob, result_metrics=metrics(4.0), created_at=t0 + timedelta(minutes=2)
    )
    # Carol's own tie: her earlier submission is the one shown.
    carol_first = add_submission(
        rules, carol, result_metrics=metrics(6.0), created_at=t0 + timedelta(minutes=3)
    )
    add_submission(rules, carol, result_metrics=metrics(6.0), created_at=t0 + timedelta(minutes=4))
    # Dave's rows lack a score (measured before the harness existed): not ranked.
    add_submission(rules, dave, result_metrics={"exit_code": 0, "wall_s": 1.0})
    # A baseline, faster than everyone: shown apart, never ranked.
    baseline = add_submission(rules, people.root[0], result_metrics=metrics(2.0), is_baseline=True)

    result = board(rules)
    assert [(e.rank, e.participant, e.submission_id) for e in result.entries] == [
        (1, "alice", alice_best),
        (2, "bob", bob_best),
        (3, "carol", carol_first),
    ]
    assert [e.submission_id for e in result.baselines] == [baseline]
    assert result.baselines[0].rank is None


def test_higher_is_better_ranks_the_other_way(rules: Settings, people: People) -> None:
    add_submission(rules, people.alice[0], result_metrics=metrics(100.0))
    add_submission(rules, people.alice[0], result_metrics=metrics(300.0))
    add_submission(rules, people.bob[0], result_metrics=metrics(200.0))
    result = board(rules, HIGHER)
    assert [(e.participant, e.score) for e in result.entries] == [("alice", 300.0), ("bob", 200.0)]


def test_overlapping_intervals_are_statistically_tied_with_the_entry_above(
    rules: Settings, people: People
) -> None:
    carol = make_user(rules, "carol", password=None)[0]
    dave = make_user(rules, "dave", password=None)[0]
    add_submission(rules, people.alice[0], result_metrics=metrics(4.0, (3.8, 4.2)))
    add_submission(rules, people.bob[0], result_metrics=metrics(4.1, (4.15, 4.3)))  # overlaps
    add_submission(rules, carol, result_metrics=metrics(5.0, (4.9, 5.1)))  # clear of bob's
    add_submission(rules, dave, result_metrics={**metrics(6.0), "score_ci": None})  # no interval
    result = board(rules)
    assert [(e.participant, e.tied_with_above) for e in result.entries] == [
        ("alice", False),
        ("bob", True),
        ("carol", False),
        ("dave", False),
    ]


def test_api_page_and_csv_agree(app_client: TestClient, rules: Settings, people: People) -> None:
    add_submission(rules, people.alice[0], result_metrics=metrics(4.0, (3.0, 5.0), tpot=4.0))
    add_submission(rules, people.bob[0], result_metrics=metrics(4.5, (4.4, 4.6), tpot=4.5))
    add_submission(rules, people.root[0], result_metrics=metrics(8.0), is_baseline=True)

    api = app_client.get("/api/v1/leaderboard").json()
    assert api["metric"] == bundled_metric() and api["direction"] == "lower"
    assert [(e["rank"], e["participant"], e["statistically_tied"]) for e in api["entries"]] == [
        (1, "alice", False),
        (2, "bob", True),
    ]
    first = api["entries"][0]
    assert first["score_ci"] == [3.0, 5.0]
    assert first["tpot_p50_ms"] == 4.0 and first["ttft_p50_ms"] == 10.0
    assert first["output_tokens_per_s"] == 250.0
    assert [b["participant"] for b in api["baselines"]] == ["root"]

    page = app_client.get("/leaderboard").text
    assert page.index('data-participant="alice"') < page.index('data-participant="bob"')
    assert "statistically tied" in page[page.index('data-participant="bob"') :]
    assert 'id="baselines"' in page

    exported = app_client.get("/api/v1/admin/leaderboard.csv", headers=bearer(people.root[1]))
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["rank"], r["participant"], r["statistically_tied_with_above"]) for r in rows] == [
        ("1", "alice", ""),
        ("2", "bob", "yes"),
        ("", "root", ""),
    ]


def test_history_lists_each_new_best(rules: Settings, people: People) -> None:
    t0 = utcnow() - timedelta(days=1)
    first = add_submission(rules, people.alice[0], result_metrics=metrics(9.0), created_at=t0)
    add_submission(
        rules, people.bob[0], result_metrics=metrics(9.5), created_at=t0 + timedelta(hours=1)
    )
    second = add_submission(
        rules, people.bob[0], result_metrics=metrics(7.0), created_at=t0 + timedelta(hours=2)
    )
    add_submission(
        rules,
        people.alice[0],
        result_metrics=metrics(1.0, correct=False),
        created_at=t0 + timedelta(hours=3),
    )
    third = add_submission(
        rules, people.alice[0], result_metrics=metrics(5.0), created_at=t0 + timedelta(hours=4)
    )
    with db.session_scope(rules) as session:
        records = leaderboard.history(session, LOWER)
    assert [(r.submission_id, r.score, r.participant) for r in records] == [
        (first, 9.0, "alice"),
        (second, 7.0, "bob"),
        (third, 5.0, "alice"),
    ]


@pytest.mark.parametrize("value", ["fast", None, True, [1, 2]])
def test_a_malformed_score_keeps_the_row_off_without_breaking_the_board(
    rules: Settings, people: People, value: object
) -> None:
    add_submission(rules, people.alice[0], result_metrics={**metrics(1.0), "score": value})
    add_submission(rules, people.bob[0], result_metrics=metrics(3.0))
    assert [e.participant for e in board(rules).entries] == ["bob"]


def test_disqualify_and_restore_move_a_participant_off_and_back(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    best = add_submission(rules, people.alice[0], result_metrics=metrics(2.0))
    add_submission(rules, people.alice[0], result_metrics=metrics(3.0))
    root = bearer(people.root[1])
    out = app_client.post(
        f"/api/v1/admin/submissions/{best}/disqualify",
        json={"reason": "reads the reference"},
        headers=root,
    ).json()
    assert out["disqualified"] is True and out["disqualified_reason"] == "reads the reference"
    assert [e.score for e in board(rules).entries] == [3.0]
    app_client.post(f"/api/v1/admin/submissions/{best}/restore", headers=root)
    assert [e.score for e in board(rules).entries] == [2.0]

"""Results ranked under an older metric never outrank current ones: re-scored exactly, or stale.

The task here ranks ``latency.e2e_per_token_ms.p50`` (N = 64 tokens a request); the old results
ranked ``latency.tpot_ms.p50``. Run on SQLite and PostgreSQL, through the portal's start and the
``edc admin rescore`` command as well as the function.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from sqlalchemy import update
from typer.testing import CliRunner

from edc import db
from edc.cli import admin as cli_admin
from edc.config import Settings, get_settings
from edc.models import DEFAULT_TRACK, Submission, User
from edc.portal.app import create_app
from edc.services import leaderboard, rescore, teams
from edc.status import SubmissionStatus
from edc.tasks.task import Ranking, Task, bundled_task_dir
from tests.support.competition import add_submission, bearer, make_user, metrics, web_login
from tests.support.live_server import People
from tests.support.rows import get_submission

OLD = "latency.tpot_ms.p50"
NEW = "latency.e2e_per_token_ms.p50"
N = 64  # the bundled task's max_new_tokens


@pytest.fixture
def task() -> Task:
    bundled = Task.load(bundled_task_dir())
    assert bundled.max_new_tokens == N
    ranking = Ranking(metric=NEW, direction="lower")
    return dataclasses.replace(bundled, spec=bundled.spec.model_copy(update={"ranking": ranking}))


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    """The bundled task ranking the new figure, on disk (for the portal and the CLI)."""
    root = tmp_path / "task"
    root.mkdir()
    bundled = bundled_task_dir()
    text = (bundled / "task.toml").read_text()
    text = re.sub(r'(?m)^metric = ".*"$', f'metric = "{NEW}"', text)
    (root / "task.toml").write_text(text)
    (root / "model").symlink_to(bundled / "model")
    return root


@pytest.fixture
def new_rules(rules: Settings, task_dir: Path) -> Settings:
    return rules.model_copy(update={"task_dir": task_dir})


def old_result(
    e2e_p50: float,
    *,
    metric: str | None = OLD,
    e2e: bool = True,
    positions: int = N - 1,
) -> dict[str, Any]:
    """A result as the harness stored it when the task ranked ``metric``."""
    latency: dict[str, Any] = {
        "tpot_ms": {"p50": 1.0, "p90": 1.2, "p99": 1.5, "mean": 1.1},
        "ttft_ms": {"p50": 10.0, "p90": 12.0, "p99": 15.0, "mean": 10.5},
    }
    if e2e:
        latency["e2e_ms"] = {
            "p50": e2e_p50,
            "p90": e2e_p50 * 1.25,
            "p99": e2e_p50 * 1.5,
            "mean": e2e_p50 * 1.125,
        }
    out: dict[str, Any] = {
        "correct": True,
        "score": 1.0,
        "score_ci": [0.9, 1.1],
        "score_repeats": [0.9, 1.0, 1.1],
        "latency": latency,
        "throughput": {"output_tokens_per_s": 900.0},
        "load_s": 0.5,
        "itl_ms_by_position": [1.0] * positions,
    }
    if metric is not None:
        out["score_metric"] = metric
    return out


def new_result(score: float, ci: tuple[float, float]) -> dict[str, Any]:
    """A result the current harness stored, ranked under the new figure."""
    result = old_result(score * N, metric=NEW)
    result["latency"]["e2e_per_token_ms"] = {
        q: v / N for q, v in result["latency"]["e2e_ms"].items()
    }
    return {**result, "score": score, "score_ci": list(ci), "score_repeats": [score] * 3}


def run_rescore(settings: Settings, task: Task) -> rescore.RescoreCounts:
    with db.session_scope(settings) as session:
        return rescore.rescore_results(session, task=task)


def test_an_old_result_with_e2e_is_converted_exactly(rules: Settings, task: Task) -> None:
    row = add_submission(rules, None, result_metrics=old_result(640.0))
    counts = run_rescore(rules, task)
    assert (counts.metric, counts.rescored, counts.stale) == (NEW, 1, 0)

    stored = get_submission(rules, row)
    m = stored.result_metrics
    assert m is not None
    assert m["latency"]["e2e_per_token_ms"] == {
        "p50": 10.0,
        "p90": 12.5,
        "p99": 15.0,
        "mean": 11.25,
    }
    assert (m["score"], m["score_metric"], m["rescored_from"]) == (10.0, NEW, OLD)
    assert m["score_ci"] is None and m["score_repeats"] is None
    assert m["superseded"] == {
        "metric": OLD,
        "score": 1.0,
        "score_ci": [0.9, 1.1],
        "score_repeats": [0.9, 1.0, 1.1],
    }
    assert m["latency"]["tpot_ms"]["p50"] == 1.0 and m["load_s"] == 0.5  # the rest is kept
    # The generated columns follow the JSON.
    assert (stored.score, stored.score_ci_low, stored.score_ci_high) == (10.0, None, None)


def test_what_cannot_be_converted_is_stale_and_off_the_board(
    rules: Settings, task: Task, people: People
) -> None:
    no_e2e = add_submission(rules, people.alice[0], result_metrics=old_result(0, e2e=False))
    # Measured with 16 tokens a request: dividing by today's 64 would be wrong.
    other_n = add_submission(rules, people.bob[0], result_metrics=old_result(640.0, positions=15))
    unrecorded = add_submission(
        rules, people.root[0], result_metrics=old_result(640.0, metric=None)
    )
    counts = run_rescore(rules, task)
    assert (counts.rescored, counts.stale) == (1, 2)

    for row in (no_e2e, other_n):
        m = get_submission(rules, row).result_metrics
        assert m is not None
        assert (m["score"], m["stale"], m["stale_metric"]) == (None, True, OLD)
        assert m["superseded"]["score"] == 1.0
        assert get_submission(rules, row).score is None
    # No metric recorded (before the harness recorded it): converted all the same, as the
    # conversion does not depend on what it ranked.
    m = get_submission(rules, unrecorded).result_metrics
    assert m is not None and m["score"] == 10.0 and m["rescored_from"] is None

    with db.session_scope(rules) as session:
        board = leaderboard.compute(session, leaderboard.Ranking(metric=NEW, direction="lower"))
    assert [e.submission_id for e in board.entries] == [unrecorded]


def test_it_is_idempotent_and_leaves_current_results_alone(rules: Settings, task: Task) -> None:
    current = add_submission(rules, None, result_metrics=new_result(9.0, (8.0, 10.0)))
    old = add_submission(rules, None, result_metrics=old_result(640.0))
    stale = add_submission(rules, None, result_metrics=old_result(0, e2e=False))
    unscored = add_submission(
        rules, None, status=SubmissionStatus.FAILED, result_metrics={"wall_s": 1.0}
    )
    assert (run_rescore(rules, task).rescored, run_rescore(rules, task).stale) == (1, 0)
    before = {r: get_submission(rules, r).result_metrics for r in (current, old, stale, unscored)}
    again = run_rescore(rules, task)
    assert (again.rescored, again.stale) == (0, 0)
    after = {r: get_submission(rules, r).result_metrics for r in (current, old, stale, unscored)}
    assert after == before
    assert before[current] == new_result(9.0, (8.0, 10.0))
    assert before[unscored] == {"wall_s": 1.0}


def test_a_rerun_between_the_read_and_the_write_is_not_undone(rules: Settings, task: Task) -> None:
    row = add_submission(rules, None, result_metrics=old_result(640.0))
    # What a rerun leaves: a new attempt, the old result cleared. The conversion read before it
    # must not write the old result back.
    converted = rescore.convert(old_result(640.0), metric=NEW, max_new_tokens=N)
    with db.session_scope(rules) as session:
        session.execute(
            update(Submission)
            .where(Submission.id == row)
            .values(status=SubmissionStatus.QUEUED, attempt=2, result_metrics=None)
        )
        written = session.execute(
            update(Submission)
            .where(
                Submission.id == row,
                Submission.attempt == 1,
                Submission.status == SubmissionStatus.COMPLETED,
            )
            .values(result_metrics=converted)
        )
        assert written.rowcount == 0  # type: ignore[attr-defined]
    assert get_submission(rules, row).result_metrics is None
    assert run_rescore(rules, task).rescored == 0


def test_the_board_ranks_rescored_rows_without_an_interval_or_a_tie(
    new_rules: Settings, people: People
) -> None:
    carol = make_user(new_rules, "carol", password=None)[0]
    add_submission(new_rules, carol, result_metrics=new_result(11.0, (10.0, 12.0)))
    # Alice's old result converts to 10.0 ms per token, Bob's current one is 10.5 ± 1.
    alice = add_submission(new_rules, people.alice[0], result_metrics=old_result(640.0))
    bob = add_submission(new_rules, people.bob[0], result_metrics=new_result(10.5, (9.5, 11.5)))
    stale = add_submission(new_rules, people.root[0], result_metrics=old_result(1.0, e2e=False))
    with TestClient(create_app(new_rules)) as client:  # the portal's start re-scores
        api = client.get("/api/v1/leaderboard").json()
        page = client.get("/leaderboard").text
        csv_text = client.get("/api/v1/admin/leaderboard.csv", headers=bearer(people.root[1])).text
        web_login(client, "alice")
        own = client.get(f"/submissions/{alice}").text
    assert api["metric"] == NEW
    assert [
        (e["participant"], e["score"], e["score_ci"], e["statistically_tied"], e["rescored_from"])
        for e in api["entries"]
    ] == [
        ("alice", 10.0, None, False, OLD),
        # Bob's interval covers Alice's score, but hers has no interval: no tie is claimed.
        ("bob", 10.5, [9.5, 11.5], False, None),
        # Between two intervals the rule holds as before.
        ("carol", 11.0, [10.0, 12.0], True, None),
    ]
    assert all(e["submission_id"] != stale for e in api["entries"])
    alice_row = page[page.index(f'id="entry-{alice}"') :].split("</tr>")[0]
    assert "re-scored" in alice_row and "[" not in alice_row.split("<strong>")[1]
    assert csv_text.splitlines()[1].startswith(f"1,alice,{alice},10.0,,,")
    assert csv_text.splitlines()[1].endswith(f",{OLD}")
    assert "Re-scored: measured when the task ranked latency.tpot_ms.p50" in own
    assert get_submission(new_rules, bob).score == 10.5


def test_a_stale_result_says_so_to_its_owner(new_rules: Settings, people: People) -> None:
    row = add_submission(new_rules, people.alice[0], result_metrics=old_result(1.0, e2e=False))
    with TestClient(create_app(new_rules)) as client:
        web_login(client, "alice")
        page = client.get(f"/submissions/{row}").text
        api = client.get(f"/api/v1/submissions/{row}", headers=bearer(people.alice[1])).json()
    assert "Stale: scored under an older rule (latency.tpot_ms.p50)" in page
    assert "an organiser can re-run it" in page
    assert api["result_metrics"]["stale"] is True and api["result_metrics"]["score"] is None


def test_edc_admin_rescore_prints_the_counts(new_rules: Settings, tmp_path: Path) -> None:
    add_submission(new_rules, None, result_metrics=old_result(640.0))
    add_submission(new_rules, None, result_metrics=old_result(1.0, e2e=False))
    app = typer.Typer()
    cli_admin.register(app)
    env = {
        "EDC_DATA_DIR": str(new_rules.data_dir),
        "EDC_DATABASE_URL": new_rules.resolved_database_url,
        "EDC_TASK_DIR": str(new_rules.task_dir),
        "EDC_CLI_CONFIG_DIR": str(tmp_path / "cli"),
    }
    get_settings.cache_clear()
    try:
        first = CliRunner().invoke(app, ["admin", "rescore"], env=env)
        get_settings.cache_clear()
        second = CliRunner().invoke(app, ["admin", "rescore"], env=env)
    finally:
        get_settings.cache_clear()
    assert first.exit_code == 0, first.output
    assert f"track default, ranked by {NEW}" in first.output
    assert "re-scored from stored figures: 1" in first.output
    assert "stale (another ranking rule): 1" in first.output
    assert second.exit_code == 0
    assert "re-scored from stored figures: 0" in second.output
    assert "stale (another ranking rule): 0" in second.output
    assert "stale (another result version): 0" in second.output


def _stale(old_score: float) -> dict[str, Any]:
    """A result gone stale, as rescore leaves it: off the board, its old score kept."""
    return {
        "correct": True,
        "score": None,
        "stale": True,
        "superseded": {"version": "old", "score": old_score},
    }


def test_the_best_stale_entries_are_one_per_row_of_the_board(rules: Settings) -> None:
    """``rescore --top K`` brings back the K best rows of the old board, in its order: a
    participant's many archives, or a team's members' archives, are one row and take one of the
    K; an archive's runs pool by their median; a row whose best archive is current again is back
    and not offered; each baseline is a row of its own."""
    names = ("alice", "bob", "carol", "dave", "erin", "frank", "gina", "hank", "ivy", "root")
    alice, bob, carol, dave, erin, frank, gina, hank, ivy, root = (
        make_user(rules, name)[0] for name in names
    )
    with db.session_scope(rules) as session:
        team = teams.create_team(session, rules, user=session.get(User, dave), name="pair")
        teams.join_team(session, rules, user=session.get(User, erin), code=team.invite_code)
    best_of_alice = add_submission(rules, alice, result_metrics=_stale(1.0))
    for old in (1.1, 1.2):  # alice's other archives: better than bob's, but her row is taken
        add_submission(rules, alice, result_metrics=_stale(old))
    add_submission(rules, dave, result_metrics=_stale(1.4))
    best_of_team = add_submission(rules, erin, result_metrics=_stale(1.3))
    best_of_bob = add_submission(rules, bob, result_metrics=_stale(1.5))
    # One lucky run of three: carol's row stood at their median, 3.0; her newest run stands for it.
    lucky = "ab" * 32
    for old in (0.5, 3.0):
        add_submission(rules, carol, sha256=lucky, result_metrics=_stale(old))
    newest_of_carol = add_submission(rules, carol, sha256=lucky, result_metrics=_stale(3.0))
    # Uploaded again since: frank's only archive is current, his row is back.
    again = "cd" * 32
    add_submission(rules, frank, sha256=again, result_metrics=_stale(0.9))
    add_submission(rules, frank, sha256=again, result_metrics=metrics(1.0))
    # Measured again by an earlier rescore: gina's best archive is current, her row is back,
    # and her second archive does not take a place.
    add_submission(rules, gina, result_metrics={**metrics(1.0), "remeasured_from": _stale(1.02)})
    add_submission(rules, gina, result_metrics=_stale(1.12))
    # Equal old scores: the earlier uploaded first, as on the board.
    first_of_equals = add_submission(rules, hank, result_metrics=_stale(2.0))
    second_of_equals = add_submission(rules, ivy, result_metrics=_stale(2.0))
    baselines = [
        add_submission(rules, owner, is_baseline=True, result_metrics=_stale(old))
        for owner, old in ((root, 1.05), (root, 1.25), (None, 1.45))
    ]
    add_submission(rules, None, result_metrics=_stale(0.5))  # a deleted account's: no row
    with db.session_scope(rules) as session:
        chosen = rescore.stale_entries(session, track=DEFAULT_TRACK, direction="lower")
        reversed_board = rescore.stale_entries(session, track=DEFAULT_TRACK, direction="higher")
    assert [(e.submission_id, e.old_score) for e in chosen] == [
        (best_of_alice, 1.0),
        (baselines[0], 1.05),
        (baselines[1], 1.25),
        (best_of_team, 1.3),
        (baselines[2], 1.45),
        (best_of_bob, 1.5),
        (first_of_equals, 2.0),
        (second_of_equals, 2.0),
        (newest_of_carol, 3.0),
    ]
    # Higher is better: each row's best archive is another, the rows come in the other order.
    assert [e.old_score for e in reversed_board][:3] == [3.0, 2.0, 2.0]


@pytest.mark.parametrize(
    ("metric", "score"),
    [
        ("latency.e2e_ms.p90", 800.0),  # reported already: taken as it was stored
        ("throughput.output_tokens_per_s", 900.0),
        ("latency.e2e_per_token_ms.p99", 15.0),  # 960 ms / 64
        ("latency.e2e_per_token_ms.mean", 11.25),  # 720 ms / 64
    ],
)
def test_every_rankable_figure_is_found_or_derived(metric: str, score: float) -> None:
    out = rescore.convert(old_result(640.0), metric=metric, max_new_tokens=N)
    assert (out["score"], out["score_metric"], out["rescored_from"]) == (score, metric, OLD)
    assert "stale" not in out


def test_a_figure_already_stored_is_taken_over_a_derived_one() -> None:
    # A result of the current harness, scored under the p50, when the task moves to the p90.
    out = rescore.convert(
        new_result(9.0, (8.0, 10.0)), metric="latency.e2e_per_token_ms.p90", max_new_tokens=N
    )
    assert out["score"] == 9.0 * 1.25
    assert out["superseded"]["score_ci"] == [8.0, 10.0]

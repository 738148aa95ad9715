"""Each cheat fails, or ranks no better than honest kvcache measured in the same test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import edc
from edc.config import Settings
from edc.errors import RunFailed
from edc.harness.evaluate import evaluate_submission
from edc.sandbox.base import Sandbox
from edc.status import FailureReason
from edc.tasks.task import Task
from edc.worker.evaluation import StageFailed, evaluate
from tests.harness.conftest import TaskFactory, write_native

from .cheats import BURST, CHUNKED, KVCACHE, NESTED_JSON, PRECOMPUTED, SNOOP, python_cheat

# Compares an honest run against a cheat's: runs with no other test beside it.
pytestmark = pytest.mark.timing

# Timing on a shared machine is noisy, and sending a chunk is not free (a burst skips 63 wake-ups
# of the harness: 8-18% on one core here, more when the cores are contended). A cheat passes only
# if it is no more than this much "faster" than honest kvcache doing the same work; the old
# ranked figure scored the burst at 0.
NOISE_ALLOWANCE = 0.5


@pytest.fixture
def timed_task(make_task: TaskFactory) -> Task:
    # Long enough requests that holding tokens back would matter.
    return make_task(max_new_tokens=32, warmup=1, timed=4, throughput=2, repeats=3)


def run(sandbox: Sandbox, settings: Settings, task: Task, submission: Path, run_dir: Path) -> dict:
    return evaluate_submission(
        settings=settings, sandbox=sandbox, submission_dir=submission, task=task, run_dir=run_dir
    ).metrics


@pytest.mark.parametrize("cheat", ["burst", "chunked"])
def test_holding_tokens_back_ranks_no_better_than_honest_decoding(
    cheat: str,
    bwrap_sandbox: Sandbox,
    harness_settings: Settings,
    timed_task: Task,
    tmp_path: Path,
) -> None:
    cheater = python_cheat(tmp_path / cheat, {"burst": BURST, "chunked": CHUNKED}[cheat])
    honest = run(bwrap_sandbox, harness_settings, timed_task, KVCACHE.parent, tmp_path / "h")
    gamed = run(bwrap_sandbox, harness_settings, timed_task, cheater, tmp_path / "c")
    assert honest["score_metric"] == gamed["score_metric"] == "latency.e2e_per_token_ms.p50"
    # What the old ranked figure would have shown: the cheat "wins" by a mile.
    assert gamed["latency"]["tpot_ms"]["p50"] < 0.5 * honest["latency"]["tpot_ms"]["p50"]
    # What the ranked figure shows: no gain beyond timing noise.
    assert gamed["score"] >= NOISE_ALLOWANCE * honest["score"], (gamed["score"], honest["score"])


def test_answers_precomputed_with_the_public_seed_are_wrong(
    bwrap_sandbox: Sandbox, harness_settings: Settings, small_task: Task, tmp_path: Path
) -> None:
    cheater = python_cheat(tmp_path / "pre", PRECOMPUTED)
    with pytest.raises(RunFailed) as info:
        run(bwrap_sandbox, harness_settings, small_task, cheater, tmp_path / "run")
    assert info.value.reason is FailureReason.WRONG_OUTPUT


def test_a_deeply_nested_line_is_the_submissions_fault_not_the_platforms(
    small_task: Task, sqlite_settings: Settings, tmp_path: Path
) -> None:
    settings = sqlite_settings.model_copy(update={"sandbox": "bwrap", "task_dir": small_task.root})
    with pytest.raises(StageFailed) as info:
        evaluate(
            settings,
            submission_dir=write_native(tmp_path / "sub", NESTED_JSON),
            run_dir=tmp_path / "run",
            labels={},
            worker_id="t",
        )
    # A protocol error is the participant's: never retried as infrastructure, counted in quota.
    assert info.value.reason is FailureReason.PROTOCOL_ERROR


def test_the_platform_cannot_be_read_from_inside(
    bwrap_sandbox: Sandbox, harness_settings: Settings, small_task: Task, tmp_path: Path
) -> None:
    # A wheel under /usr/local: tests/sandbox/test_platform_hidden.py. Here: this checkout.
    harness_settings.data_dir.mkdir(parents=True, exist_ok=True)
    (harness_settings.data_dir / "secret.txt").write_text("x")
    paths = [
        str(Path(edc.__file__)),
        str(small_task.root / "task.toml"),
        str(small_task.hidden_prompts_path),
        str(harness_settings.data_dir / "secret.txt"),
    ]
    body = f"PATHS = {json.dumps(paths)}\n" + SNOOP
    with pytest.raises(RunFailed) as info:
        run(
            bwrap_sandbox,
            harness_settings,
            small_task,
            write_native(tmp_path / "s", body),
            tmp_path / "r",
        )
    line = next(x for x in info.value.logs.splitlines() if x.startswith("SNOOP "))
    assert json.loads(line.removeprefix("SNOOP ")) == []

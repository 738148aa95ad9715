"""Whole evaluations of a task with a serving sweep: the tokens served under load are verified
like every other, and one wrong token there fails the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from edc.config import Settings
from edc.errors import RunFailed
from edc.harness.evaluate import evaluate_submission
from edc.sandbox.base import Sandbox
from edc.status import FailureReason
from edc.tasks.task import Task

from .conftest import TaskFactory
from .fairness.cheats import KVCACHE, python_cheat

# One round of four requests of 3 to 5 tokens. The task's other requests ask for 8
# (max_new_tokens), so a submission knows a serving request by its shorter length.
SERVING = """
[serving]
rates = [20.0]
requests_per_rate = 4
ttft_slo_ms = 1000
tpot_slo_ms = 100
target_share = 0.5
refine_steps = 0
confirm = 0
output_tokens = [3, 5]
"""

# kvcache, except the first token of the first serving request: the least likely token there.
WRONG_WHEN_SERVED = """

_Honest = Decoder


class Decoder(_Honest):
    def __init__(self, model_dir):
        super().__init__(model_dir)
        self.spoiled = False

    def step(self, requests):
        by_id = {r.id: r for r in requests}
        for request_id, tokens in super().step(requests):
            if not self.spoiled and by_id[request_id].max_new_tokens < 8:
                logits = self.state[request_id][2]  # those the right token was chosen from
                tokens = [int(np.argmin(logits))]
                self.spoiled = True
            yield request_id, tokens
"""


@pytest.fixture
def serving_task(make_task: TaskFactory) -> Task:
    return make_task(extra_toml=SERVING)


def evaluate(sandbox: Sandbox, settings: Settings, task: Task, submission: Path, run: Path) -> dict:
    return evaluate_submission(
        settings=settings, sandbox=sandbox, submission_dir=submission, task=task, run_dir=run
    ).metrics


def test_an_honest_decoder_is_verified_through_the_serving_round(
    bwrap_sandbox: Sandbox, harness_settings: Settings, serving_task: Task, tmp_path: Path
) -> None:
    metrics = evaluate(bwrap_sandbox, harness_settings, serving_task, KVCACHE.parent, tmp_path)
    (served,) = metrics["serving"]["rates"]
    assert served["requests"] == 4
    counts = serving_task.requests
    fixed = counts.warmup + (counts.timed + counts.throughput) * counts.repeats
    # Every token checked: 8 per fixed request, and the served ones' own lengths (3 to 5 each).
    assert 8 * fixed + 4 * 3 <= metrics["tokens_checked"] <= 8 * fixed + 4 * 5


def test_one_wrong_token_in_the_serving_round_fails_the_run(
    bwrap_sandbox: Sandbox, harness_settings: Settings, serving_task: Task, tmp_path: Path
) -> None:
    cheater = python_cheat(tmp_path / "wrong", WRONG_WHEN_SERVED)
    with pytest.raises(RunFailed) as failed:
        evaluate(bwrap_sandbox, harness_settings, serving_task, cheater, tmp_path / "run")
    assert failed.value.reason is FailureReason.WRONG_OUTPUT
    # The first fault is in the first serving request, after every warm-up, latency and
    # throughput request (1 + (2 + 3) × 2 = 11), all of which were answered right.
    assert failed.value.public_message is not None
    assert failed.value.public_message.endswith(": request 12 of 15, position 0.")

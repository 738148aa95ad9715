"""Whole evaluations of a task with a serving sweep: the tokens served under load are verified
like every other, and one wrong token there fails the run.

What these tests judge is the tokens, not the harness's schedule (tests/harness/
test_serving_session.py judges that): run without EDC_CPUS, the harness shares its cores with the
decoder, and on a loaded two-core machine a send came 25 ms late, above the product's 20 ms limit,
once in twelve runs, ending the run as infrastructure before any token was checked. So their
settings give the limit room.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edc.config import Settings
from edc.errors import RunFailed
from edc.harness.evaluate import evaluate_submission, session_limits
from edc.harness.runner import DEFAULT_SEND_LAG_LIMIT_MS
from edc.sandbox.base import Sandbox
from edc.status import FailureReason
from edc.tasks.task import Task

from .conftest import ONE_SERVING_ROUND, TaskFactory
from .fairness.cheats import KVCACHE, python_cheat

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


# A second's stall is a machine in trouble, far above anything the product's limit tolerates.
LAG_ROOM_MS = 1000.0


@pytest.fixture
def serving_task(make_task: TaskFactory) -> Task:
    return make_task(extra_toml=ONE_SERVING_ROUND)


@pytest.fixture
def serving_settings(harness_settings: Settings) -> Settings:
    return harness_settings.model_copy(update={"serving_send_lag_limit_ms": LAG_ROOM_MS})


def evaluate(
    sandbox: Sandbox, settings: Settings, task: Task, submission: Path, run: Path
) -> dict[str, Any]:
    return evaluate_submission(
        settings=settings, sandbox=sandbox, submission_dir=submission, task=task, run_dir=run
    ).metrics


def test_an_honest_decoder_is_verified_through_the_serving_round(
    bwrap_sandbox: Sandbox, serving_settings: Settings, serving_task: Task, tmp_path: Path
) -> None:
    metrics = evaluate(bwrap_sandbox, serving_settings, serving_task, KVCACHE.parent, tmp_path)
    (served,) = metrics["serving"]["rates"]
    assert served["requests"] == 4
    counts = serving_task.requests
    fixed = counts.warmup + (counts.timed + counts.throughput) * counts.repeats
    # Every token checked: 8 per fixed request, and the served ones' own lengths (3 to 5 each).
    assert 8 * fixed + 4 * 3 <= metrics["tokens_checked"] <= 8 * fixed + 4 * 5


def test_one_wrong_token_in_the_serving_round_fails_the_run(
    bwrap_sandbox: Sandbox, serving_settings: Settings, serving_task: Task, tmp_path: Path
) -> None:
    cheater = python_cheat(tmp_path / "wrong", WRONG_WHEN_SERVED)
    with pytest.raises(RunFailed) as failed:
        evaluate(bwrap_sandbox, serving_settings, serving_task, cheater, tmp_path / "run")
    assert failed.value.reason is FailureReason.WRONG_OUTPUT
    # The first fault is in the first serving request, after every warm-up, latency and
    # throughput request (1 + (2 + 3) × 2 = 11), all of which were answered right.
    assert failed.value.public_message is not None
    assert failed.value.public_message.endswith(": request 12 of 15, position 0.")


def test_the_send_lag_limit_reaches_the_harness_from_the_settings(
    harness_settings: Settings, serving_settings: Settings, serving_task: Task
) -> None:
    # The product's limit by default (EDC_SERVING_SEND_LAG_LIMIT_MS), this module's room here.
    assert session_limits(serving_task, harness_settings).send_lag_limit_ms == 20.0
    assert DEFAULT_SEND_LAG_LIMIT_MS == 20.0
    assert session_limits(serving_task, serving_settings).send_lag_limit_ms == LAG_ROOM_MS

"""The example submissions, run through the real sandbox and judged by the verifier."""

from pathlib import Path

import pytest

from edc.config import Settings
from edc.errors import RunFailed
from edc.harness.evaluate import evaluate_submission
from edc.sandbox.base import Sandbox
from edc.sandbox.cpus import available_cpus
from edc.status import FailureReason
from edc.tasks.task import Task, bundled_task_dir, load_task

from .conftest import EXAMPLES, example_source, write_python

SERVING_TASK = bundled_task_dir().parent / "tiny_serving"


@pytest.fixture
def worker_settings(harness_settings: Settings) -> Settings:
    """Cores split as a worker splits them (the submission on the first, the harness on the
    rest), so the serving sweep's schedule is kept as on a worker: a shared core can make the
    harness late, which a worker never lets happen."""
    cores = available_cpus()
    if len(cores) < 2:
        return harness_settings
    return harness_settings.model_copy(update={"cpus": str(cores[0])})


@pytest.mark.parametrize("example", ["baseline", "kvcache", "batched"])
def test_example_passes_verification(
    example: str,
    bwrap_sandbox: Sandbox,
    small_task: Task,
    harness_settings: Settings,
    tmp_path: Path,
) -> None:
    evaluation = evaluate_submission(
        settings=harness_settings,
        sandbox=bwrap_sandbox,
        submission_dir=EXAMPLES / example,
        task=small_task,
        run_dir=tmp_path / "run",
    )
    metrics = evaluation.metrics
    requests = 1 + (2 + 3) * 2
    assert metrics["correct"] is True
    assert metrics["tokens_checked"] == requests * small_task.max_new_tokens
    assert metrics["max_gap"] <= small_task.epsilon
    assert metrics["exact_match_rate"] > 0.9
    assert metrics["latency"]["tpot_ms"]["p50"] > 0
    assert metrics["throughput"]["output_tokens_per_s"] > 0
    assert metrics["load_s"] > 0
    low, high = metrics["score_ci"]
    assert low <= metrics["score"] <= high
    assert len(metrics["itl_ms_by_position"]) == small_task.max_new_tokens - 1


def test_a_wrong_token_fails_naming_request_and_position(
    bwrap_sandbox: Sandbox, small_task: Task, harness_settings: Settings, tmp_path: Path
) -> None:
    # The kvcache example, except that the first request's fourth token is its worst choice.
    source = (
        example_source("kvcache")
        + """

_Correct = Decoder


class Decoder(_Correct):
    def step(self, requests):
        for request_id, tokens in super().step(requests):
            if not hasattr(self, "victim"):
                self.victim = request_id
            request = next(r for r in requests if r.id == request_id)
            if request_id == self.victim and len(request.generated) == 3:
                cache, sampler, logits = self.state[request_id]
                tokens = [int(sampler.scores(logits, 3).argmin())]
            yield request_id, tokens
"""
    )
    submission = write_python(tmp_path / "wrong", source)
    with pytest.raises(RunFailed) as info:
        evaluate_submission(
            settings=harness_settings,
            sandbox=bwrap_sandbox,
            submission_dir=submission,
            task=small_task,
            run_dir=tmp_path / "run",
        )
    failure = info.value
    assert failure.reason is FailureReason.WRONG_OUTPUT
    # The first request (ids are opaque) at position 3; the public sentence gives the same facts.
    assert "position 3" in failure.message
    assert failure.public_message is not None
    assert f"request 1 of {small_task.requests.total}, position 3" in failure.public_message


@pytest.mark.slow
@pytest.mark.timing  # a rate held under the SLO, send lag
def test_kvcache_passes_the_bundled_task_in_full(
    bwrap_sandbox: Sandbox, worker_settings: Settings, tmp_path: Path
) -> None:
    task = load_task(worker_settings)
    evaluation = evaluate_submission(
        settings=worker_settings,
        sandbox=bwrap_sandbox,
        submission_dir=EXAMPLES / "kvcache",
        task=task,
        run_dir=tmp_path / "run",
    )
    metrics = evaluation.metrics
    assert metrics["correct"] is True
    assert metrics["roofline"] > 0
    # Every token of every scenario was verified, the serving sweep's (8 to 32 each) too.
    assert task.serving is not None
    rounds = metrics["serving"]["rates"]
    served = len(rounds) * task.serving.requests_per_rate
    low, high = task.serving_lengths
    fixed = task.requests.total * task.max_new_tokens
    assert fixed + served * low <= metrics["tokens_checked"] <= fixed + served * high
    assert metrics["serving"]["max_rate_under_slo"] > 0


def test_the_kvcache_example_is_the_task_baseline() -> None:
    repo = Path(__file__).resolve().parents[2]
    example = repo / "examples" / "kvcache" / "submission.py"
    baseline = repo / "src" / "edc" / "tasks" / "tiny" / "baseline" / "submission.py"
    assert example.read_bytes() == baseline.read_bytes()


@pytest.mark.slow
@pytest.mark.timing  # a rate held under the SLO, send lag
def test_the_serving_task_ranks_by_the_highest_rate_held(
    bwrap_sandbox: Sandbox, worker_settings: Settings, tmp_path: Path
) -> None:
    task = Task.load(SERVING_TASK)
    evaluation = evaluate_submission(
        settings=worker_settings,
        sandbox=bwrap_sandbox,
        submission_dir=EXAMPLES / "batched",
        task=task,
        run_dir=tmp_path / "run",
        prompt_set="public",
    )
    metrics = evaluation.metrics
    serving = metrics["serving"]
    assert metrics["score_metric"] == "serving.max_rate_under_slo"
    assert metrics["score"] == serving["max_rate_under_slo"] > 0
    assert metrics["score_ci"] == serving["max_rate_under_slo_bracket"]
    held = [r["offered_rate"] for r in serving["rates"] if r["attained"]]
    assert metrics["score"] in held
    # Every request of every round was answered in full and verified.
    assert task.serving is not None
    assert all(r["requests"] == task.serving.requests_per_rate for r in serving["rates"])
    assert serving["send_lag_ms_p99"] < 20

"""The harness measures with its own clock: a submission that sleeps shows exactly that sleep."""

from pathlib import Path

import pytest

from edc.errors import RunFailed
from edc.harness import metrics
from edc.harness.runner import RequestSpec, SessionLimits, SessionPlan, run_session
from edc.sandbox.base import Sandbox
from edc.status import FailureReason
from edc.tasks.task import bundled_task_dir

from .conftest import serial_sleeper, write_native

# Compares measured latencies against known delays: runs with no other test beside it.
pytestmark = pytest.mark.timing

TOKENS = 12
FIRST_DELAY_S = 0.05
STEP_S = 0.010

SLEEPER = serial_sleeper(FIRST_DELAY_S, STEP_S)


def plan(requests: int, throughput: int = 2) -> SessionPlan:
    return SessionPlan(
        warmup=(RequestSpec("w0", (1, 2, 3)),),
        latency=(tuple(RequestSpec(f"l{i}", (4, 5, 6)) for i in range(requests)),),
        throughput=(tuple(RequestSpec(f"t{i}", (7, 8)) for i in range(throughput)),),
        max_new_tokens=TOKENS,
        vocab_size=256,
        sampling={"rule": "greedy", "seed": 5},
        load_sampling={"rule": "greedy"},
    )


def test_a_10ms_per_token_submission_shows_a_10ms_tpot(
    bwrap_sandbox: Sandbox, tmp_path: Path
) -> None:
    submission = write_native(tmp_path / "sub", SLEEPER)
    result = run_session(
        sandbox=bwrap_sandbox,
        submission_dir=submission,
        model_dir=bundled_task_dir() / "model",
        run_dir=tmp_path / "run",
        plan=plan(4),
        limits=SessionLimits(load_timeout_s=20, run_timeout_s=60),
    )
    timings = [r.timing() for r in result.latency[0]]
    latency = metrics.latency_metrics(timings)
    # A band, not a race: sleeps overshoot a little, never undershoot.
    assert 9.0 <= latency["tpot_ms"]["p50"] <= 30.0
    assert 9.0 <= latency["itl_ms"]["p50"] <= 30.0
    assert FIRST_DELAY_S * 1e3 <= latency["ttft_ms"]["p50"] <= FIRST_DELAY_S * 1e3 + 100
    expected_e2e = FIRST_DELAY_S * 1e3 + (TOKENS - 1) * STEP_S * 1e3
    assert expected_e2e <= latency["e2e_ms"]["p50"] <= expected_e2e * 3
    # Every token and chunk was stamped, in order.
    for record in result.latency[0]:
        assert len(record.tokens) == TOKENS and record.done
        assert record.stamps_ns == sorted(record.stamps_ns)
        assert record.stamps_ns[0] > record.sent_ns


def test_throughput_counts_every_token_over_the_wall_time(
    bwrap_sandbox: Sandbox, tmp_path: Path
) -> None:
    # This submission serves requests one after another, so N requests at once take N times one.
    submission = write_native(tmp_path / "sub", SLEEPER)
    result = run_session(
        sandbox=bwrap_sandbox,
        submission_dir=submission,
        model_dir=bundled_task_dir() / "model",
        run_dir=tmp_path / "run",
        plan=plan(1, throughput=3),
        limits=SessionLimits(load_timeout_s=20, run_timeout_s=60),
    )
    (run,) = result.throughput
    assert run.tokens == 3 * TOKENS
    wall_s = (run.end_ns - run.start_ns) / 1e9
    one_request_s = FIRST_DELAY_S + (TOKENS - 1) * STEP_S
    assert 3 * one_request_s <= wall_s <= 3 * one_request_s * 3
    rate = metrics.output_tokens_per_s(run.tokens, run.start_ns, run.end_ns)
    assert rate == pytest.approx(run.tokens / wall_s)


def test_a_stalled_step_is_a_run_timeout(bwrap_sandbox: Sandbox, tmp_path: Path) -> None:
    submission = write_native(
        tmp_path / "sub",
        """\
        send({"op": "ready"})
        message = receive()
        send({"id": message["id"], "tokens": [65, 66]})
        time.sleep(60)
        """,
    )
    with pytest.raises(RunFailed) as info:
        run_session(
            sandbox=bwrap_sandbox,
            submission_dir=submission,
            model_dir=bundled_task_dir() / "model",
            run_dir=tmp_path / "run",
            plan=plan(1),
            limits=SessionLimits(load_timeout_s=20, run_timeout_s=60, step_timeout_s=1.0),
        )
    assert info.value.reason is FailureReason.RUN_TIMEOUT
    assert "sent nothing for 1 s" in info.value.message
    assert "'w0' (2 of 12 tokens)" in info.value.message


def test_a_missing_done_is_named(bwrap_sandbox: Sandbox, tmp_path: Path) -> None:
    submission = write_native(
        tmp_path / "sub",
        """\
        send({"op": "ready"})
        message = receive()
        send({"id": message["id"], "tokens": [65] * message["max_new_tokens"]})
        time.sleep(60)
        """,
    )
    with pytest.raises(RunFailed) as info:
        run_session(
            sandbox=bwrap_sandbox,
            submission_dir=submission,
            model_dir=bundled_task_dir() / "model",
            run_dir=tmp_path / "run",
            plan=plan(1),
            limits=SessionLimits(load_timeout_s=20, run_timeout_s=60, step_timeout_s=0.5),
        )
    assert info.value.reason is FailureReason.RUN_TIMEOUT
    assert "every token arrived, but no" in info.value.message

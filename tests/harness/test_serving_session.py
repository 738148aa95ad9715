"""The serving sweep in the real sandbox: requests go out on schedule whatever the submission does,
and a rate it cannot serve within the SLO is not held."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from edc.errors import RunFailed
from edc.harness.runner import (
    DEFAULT_SEND_LAG_LIMIT_MS,
    DEFAULT_STEP_TIMEOUT_S,
    RequestSpec,
    ServingPlan,
    SessionLimits,
    SessionPlan,
    SessionResult,
    run_session,
)
from edc.harness.serving import Slo
from edc.sandbox.base import Sandbox
from edc.status import FailureReason
from edc.tasks.task import bundled_task_dir

from .conftest import serial_sleeper, write_native

FIRST_DELAY_S = 0.02
STEP_S = 0.005

# One request at a time, each token after a fixed sleep: a request of N tokens takes
# FIRST_DELAY_S + (N - 1) · STEP_S once started, and waits for every request before it.
SERIAL = serial_sleeper(FIRST_DELAY_S, STEP_S)


def plan(rates: tuple[float, ...], per_rate: int = 8) -> SessionPlan:
    lengths = [4, 6] * (len(rates) * per_rate)
    specs = tuple(RequestSpec(f"s{i}", (1, 2, 3), lengths[i]) for i in range(len(rates) * per_rate))
    return SessionPlan(
        warmup=(),
        latency=((RequestSpec("l0", (4, 5)),),),
        throughput=((RequestSpec("t0", (6, 7)),),),
        max_new_tokens=6,
        vocab_size=256,
        sampling={"rule": "greedy", "seed": 5},
        load_sampling={"rule": "greedy"},
        serving=ServingPlan(
            specs=specs,
            rates=rates,
            requests_per_rate=per_rate,
            burstiness=1.0,
            schedule_seed=11,
            slo=Slo(ttft_ms=100, tpot_ms=20),
            target_share=0.9,
            refine_steps=0,
            confirm=0,
        ),
    )


def serve(
    sandbox: Sandbox,
    tmp_path: Path,
    plan: SessionPlan,
    *,
    step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S,
    send_lag_limit_ms: float = DEFAULT_SEND_LAG_LIMIT_MS,
) -> SessionResult:
    """The serial submission through ``plan``."""
    return run_session(
        sandbox=sandbox,
        submission_dir=write_native(tmp_path / "sub", SERIAL),
        model_dir=bundled_task_dir() / "model",
        run_dir=tmp_path / "run",
        plan=plan,
        limits=SessionLimits(
            load_timeout_s=20,
            run_timeout_s=60,
            step_timeout_s=step_timeout_s,
            send_lag_limit_ms=send_lag_limit_ms,
        ),
    )


def test_sends_keep_the_schedule_while_the_submission_falls_behind(
    bwrap_sandbox: Sandbox, tmp_path: Path
) -> None:
    result = serve(bwrap_sandbox, tmp_path, plan((2.0, 400.0)))
    assert result.serving is not None
    slow, fast = result.serving.rounds
    # At 2 requests/s each request (~40 ms) is done before the next: every one meets the SLO.
    assert slow.attained and slow.metrics["slo_attainment"] == 1.0
    # At 400/s the eight arrive within ~20 ms and queue behind each other: the later ones' first
    # token comes after those before them are done (~40 ms each), far past the 100 ms TTFT bound.
    assert not fast.attained
    assert fast.metrics["slo_attainment"] < 0.9
    # Yet every generate went out on schedule, the submission's backlog notwithstanding.
    for served in (slow, fast):
        lags_ms = [
            (r.sent_ns - at) / 1e6
            for r, at in zip(served.records, served.scheduled_ns, strict=True)
        ]
        assert all(0 <= lag < 20 for lag in lags_ms), lags_ms
    # The last was sent before the first was answered: sends never wait for the submission.
    assert fast.records[-1].sent_ns < fast.records[0].stamps_ns[-1]
    assert result.serving.max_rate_under_slo == 2.0
    assert result.serving.bracket == (2.0, 400.0)
    # Each request asked for its own length and got exactly that.
    assert [len(r.tokens) for r in slow.records] == [4, 6] * 4


def test_a_schedule_the_harness_could_not_keep_is_the_platforms_failure(
    bwrap_sandbox: Sandbox, tmp_path: Path
) -> None:
    with pytest.raises(RunFailed) as failed:
        # No harness keeps a negative lag: as if every send had been late.
        serve(bwrap_sandbox, tmp_path, plan((2.0,)), send_lag_limit_ms=-1.0)
    assert failed.value.reason is FailureReason.INFRASTRUCTURE
    assert "could not send the serving requests on schedule" in failed.value.message


def test_quiet_gaps_between_requests_are_not_silence(
    bwrap_sandbox: Sandbox, tmp_path: Path
) -> None:
    # At 1 request/s the gaps (~1 s) outlast the step timeout; only a waiting request's silence
    # counts against the submission.
    result = serve(bwrap_sandbox, tmp_path, plan((1.0,), per_rate=3), step_timeout_s=0.4)
    assert result.serving is not None
    (only,) = result.serving.rounds
    assert [len(r.tokens) for r in only.records] == [4, 6, 4]
    gaps_s = [(b - a) / 1e9 for a, b in itertools.pairwise(only.scheduled_ns)]
    assert max(gaps_s) > 0.4  # the case this test is about did occur (fixed seed)

"""The one entry point the worker and ``edc eval`` share: evaluate a submission on a task.

::

    task = load_task(settings)
    evaluation = evaluate_submission(
        settings=settings, sandbox=choose_sandbox(settings, task.runtime), task=task,
        submission_dir=path, run_dir=scratch_dir,
    )
    evaluation.metrics["score"], evaluation.logs

Timing runs first (in the sandbox, through the protocol), verification after, outside the sandbox,
so the reference never shares a machine moment with the code it judges. Any failure raises
:class:`~edc.errors.RunFailed` with a reason, a sentence and the sandbox's logs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edc.config import Settings
from edc.errors import RunFailed
from edc.harness import metrics as m
from edc.harness.arrivals import output_lengths
from edc.harness.bandwidth import device_bandwidth_gb_per_s
from edc.harness.disclosure import GENERIC_SENTENCES
from edc.harness.draw import EvaluationSecret, draw_prompts
from edc.harness.runner import (
    RequestRecord,
    RequestSpec,
    ServingPlan,
    SessionLimits,
    SessionPlan,
    SessionResult,
    run_session,
)
from edc.harness.serving import Slo
from edc.harness.verify import FaultKind, RequestOutput, VerificationReport, Verifier
from edc.sandbox.base import Sandbox
from edc.sandbox.cpus import harness_cpus, owned_cpus
from edc.status import FailureReason
from edc.tasks.task import Prompt, Task
from edc.tasks.torch_reference import release_device_memory
from edc.tasks.weights import weights_per_token

PromptSet = Literal["hidden", "public"]
PHASES = ("start", "load", "warmup", "latency", "throughput", "serving", "verify", "done")


@dataclass(frozen=True)
class ProgressEvent:
    """Where an evaluation is: ``phase`` is one of PHASES; ``done``/``total`` count requests."""

    phase: str
    done: int
    total: int


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, Any]  # design.md's names; stored as the submission's result_metrics
    logs: str  # the sandbox's stdout and stderr, truncated at the sandbox boundary
    audit: dict[str, Any]  # organisers only: the secret and drawn prompts that replay it


def session_limits(task: Task, settings: Settings) -> SessionLimits:
    limits = task.limits
    return SessionLimits(
        load_timeout_s=limits.load_timeout_s,
        run_timeout_s=limits.run_timeout_s,
        memory_mb=limits.memory_mb,
        pids_max=limits.pids,
        cpus=limits.cpus,
        scratch_mb=settings.scratch_mb,
        output_cap_bytes=settings.log_cap_bytes,
        gpus=settings.gpu_ids,
        cpuset=owned_cpus(settings),
        harness_cpuset=harness_cpus(settings),
        send_lag_limit_ms=settings.serving_send_lag_limit_ms,
    )


@dataclass(frozen=True)
class Draw:
    """One evaluation's requests: what the harness runs, how it is judged, what replays it."""

    plan: SessionPlan
    judged: Task  # the task with the evaluation's secret sampling seed
    audit: dict[str, Any]  # for organisers: the secret and the drawn prompts' ids


def draw_session(task: Task, pool: Sequence[Prompt], secret: EvaluationSecret) -> Draw:
    """Draw the evaluation's prompts from ``pool`` with ``secret``, under opaque request ids.

    The seed goes out only with each ``generate``; ``load`` carries the rule and temperature.
    """
    counts = task.requests
    serving = task.serving
    drawn = draw_prompts(
        pool,
        needed=task.prompts_needed,
        secret=secret,
        groups=[
            counts.warmup,
            *[counts.timed] * counts.repeats,
            *[counts.throughput] * counts.repeats,
            *([serving.max_requests] if serving else []),
        ],
    )
    split = task.request_plan(drawn)
    counter = iter(range(len(drawn)))

    def specs(
        prompts: Sequence[Prompt], lengths: Sequence[int | None] | None = None
    ) -> tuple[RequestSpec, ...]:
        return tuple(
            RequestSpec(secret.request_id(next(counter)), p.tokens, n)
            for p, n in zip(prompts, lengths or [None] * len(prompts), strict=True)
        )

    seed = secret.sampling_seed()
    rule = task.sampling
    public_rule = {"rule": rule.kind, "temperature": rule.temperature}
    serving_plan = None
    if serving is not None:
        low, high = task.serving_lengths
        schedule_seed = secret.schedule_seed()
        serving_plan = ServingPlan(
            specs=specs(
                split.serving,
                output_lengths(count=len(split.serving), low=low, high=high, seed=schedule_seed),
            ),
            rates=tuple(serving.rates),
            requests_per_rate=serving.requests_per_rate,
            burstiness=serving.burstiness,
            schedule_seed=schedule_seed,
            slo=Slo(ttft_ms=serving.ttft_slo_ms, tpot_ms=serving.tpot_slo_ms),
            target_share=serving.target_share,
            refine_steps=serving.refine_steps,
            confirm=serving.confirm,
            time_budget_s=serving.time_budget_s,
        )
    plan = SessionPlan(
        warmup=specs(split.warmup),
        latency=tuple(specs(repeat) for repeat in split.timed),
        throughput=tuple(specs(repeat) for repeat in split.throughput),
        max_new_tokens=task.max_new_tokens,
        vocab_size=task.vocab_size,
        sampling={**public_rule, "seed": seed},
        load_sampling=public_rule,
        serving=serving_plan,
    )
    audit = {
        "secret": secret.hex(),
        "pool_size": len(pool),
        "prompt_ids": [p.id for p in drawn],
    }
    return Draw(plan=plan, judged=task.with_seed(seed), audit=audit)


def evaluate_submission(
    *,
    settings: Settings,
    sandbox: Sandbox,
    submission_dir: Path,
    task: Task,
    run_dir: Path,
    prompt_set: PromptSet = "hidden",
    pool: Sequence[Prompt] | None = None,
    secret: EvaluationSecret | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    labels: Mapping[str, str] | None = None,
) -> Evaluation:
    """Time the submission in ``sandbox``, verify every token, and compute the metrics.

    The prompts are drawn from ``pool`` (the worker passes the database's hidden pool), else from
    the task's ``prompt_set`` file, with ``secret`` (fresh unless an organiser replays one).
    """

    def report(phase: str, done: int, total: int) -> None:
        if progress is not None:
            progress(ProgressEvent(phase, done, total))

    if pool is None:
        pool = task.new_hidden_pool() if prompt_set == "hidden" else task.public_prompts()
    draw = draw_session(task, pool, secret or EvaluationSecret.fresh())
    plan = draw.plan
    run_dir.mkdir(parents=True, exist_ok=True)
    session = run_session(
        sandbox=sandbox,
        submission_dir=submission_dir,
        model_dir=task.model_dir,
        run_dir=run_dir,
        plan=plan,
        limits=session_limits(task, settings),
        labels=labels,
        progress=report,
    )
    records = session.all_records()
    report("verify", 0, len(records))
    # Judged under the evaluation's own seed; the exact-match figures come from the same
    # teacher-forced pass (a fresh seed would never hit a cache of reference decodes).
    device = reference_device(settings, task)
    verification = Verifier.for_task(draw.judged, device=device).verify(
        [RequestOutput(r.request_id, r.prompt, r.tokens, r.max_new_tokens) for r in records]
    )
    if device != "cpu":
        # The next run (the hidden one after the public check) gets the device back whole.
        release_device_memory()
    report("verify", len(records), len(records))
    if not verification.correct:
        raise RunFailed(
            FailureReason.WRONG_OUTPUT,
            verification.message,
            logs=session.logs,
            public_message=_wrong_output_facts(verification, records),
        )
    result = Evaluation(
        metrics=compute_metrics(task, session, verification, run_device(settings, task)),
        logs=session.logs,
        audit=draw.audit,
    )
    report("done", len(records), len(records))
    return result


def compute_metrics(
    task: Task, session: SessionResult, verification: VerificationReport, device: str = "cpu"
) -> dict[str, Any]:
    """The result's figures; the roofline's bandwidth is the task's, else that of ``device``,
    where the run's weights live."""
    bandwidth = task.hardware.memory_bandwidth_gbps or device_bandwidth_gb_per_s(device)
    weights = weights_per_token(task.model_dir)
    floor = m.tpot_floor_ms(weights.bytes, bandwidth)
    physics = task.plausibility
    plausibility_floor = (
        m.tpot_floor_ms(round(weights.count * physics.bytes_per_weight), physics.memory_gbps)
        if physics is not None
        else None
    )
    repeats = [
        m.RepeatTiming(
            latency=tuple(r.timing() for r in timed),
            throughput_tokens=run.tokens,
            throughput_start_ns=run.start_ns,
            throughput_end_ns=run.end_ns,
        )
        for timed, run in zip(session.latency, session.throughput, strict=True)
    ]
    return m.build_metrics(
        repeats=repeats,
        verdict=m.Verdict(
            tokens_checked=verification.tokens_checked,
            max_gap=verification.max_gap,
            exact_match_rate=(
                verification.exact_match_rate if verification.exact_match_rate is not None else 1.0
            ),
            first_divergence=_first_divergence(verification),
        ),
        load_s=session.load_s,
        ranking_metric=task.ranking.metric,
        floor_ms=floor,
        bandwidth_gb_per_s=bandwidth,
        plausibility_floor_ms=plausibility_floor,
        plausibility_margin=physics.margin if physics is not None else 1.0,
        serving=serving_metrics(task, session),
    )


def serving_metrics(task: Task, session: SessionResult) -> dict[str, Any] | None:
    """``metrics.serving``: each offered rate's figures in the order measured, the SLO, and the
    highest rate held with its bracket (edc.harness.serving.RateSweep)."""
    serving, sweep = task.serving, session.serving
    if serving is None or sweep is None:
        return None
    low, high = sweep.bracket
    return {
        "slo": {
            "ttft_ms": serving.ttft_slo_ms,
            "tpot_ms": serving.tpot_slo_ms,
            "target_share": serving.target_share,
        },
        "burstiness": serving.burstiness,
        "rates": [{**served.metrics, "attained": served.attained} for served in sweep.rounds],
        "max_rate_under_slo": sweep.max_rate_under_slo,
        "max_rate_under_slo_bracket": [low, high],
        "send_lag_ms_p99": max(s.metrics["send_lag_ms"]["p99"] for s in sweep.rounds),
        "time_budget_s": serving.time_budget_s,
        "budget_spent": sweep.budget_spent,
    }


def run_device(settings: Settings, task: Task) -> str:
    """Where a submission's weights live: the worker's first GPU when it hands GPUs to a task of
    a GPU class, else the CPU."""
    if settings.gpu_ids and task.hardware.kind != "cpu":
        return f"cuda:{settings.gpu_ids[0]}"
    return "cpu"


def reference_device(settings: Settings, task: Task) -> str:
    """Where the task's reference runs: the CPU, or the first GPU this worker owns (any GPU torch
    sees, for ``edc eval`` on a machine that names none) when the task verifies on a GPU."""
    if task.spec.model.reference_device != "gpu":
        return "cpu"
    # Torch numbers GPUs fastest first unless told otherwise; EDC_GPUS counts in the driver's order.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return f"cuda:{settings.gpu_ids[0]}" if settings.gpu_ids else "cuda"


def _wrong_output_facts(verification: VerificationReport, records: Sequence[RequestRecord]) -> str:
    """Where the first fault lies, by the harness's own numbering: no token, no gap."""
    fault = verification.first_fault
    assert fault is not None
    index = next(i for i, r in enumerate(records) if r.request_id == fault.request_id)
    what = GENERIC_SENTENCES[FailureReason.WRONG_OUTPUT]
    if fault.kind is FaultKind.WRONG_COUNT:
        what = "The submission returned the wrong number of tokens"
    return f"{what}: request {index + 1} of {len(records)}, position {fault.position}."


def _first_divergence(verification: VerificationReport) -> dict[str, Any] | None:
    diverged = [v for v in verification.requests if v.first_divergence is not None]
    if not diverged:
        return None
    first = min(diverged, key=lambda v: v.first_divergence or 0)
    return {"request": first.request_id, "position": first.first_divergence}

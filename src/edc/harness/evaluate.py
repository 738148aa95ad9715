"""The one entry point the worker and ``edc eval`` share: evaluate a submission on a task.

::

    task = load_task(settings)
    evaluation = evaluate_submission(
        settings=settings, sandbox=choose_sandbox(settings), submission_dir=path, task=task,
        run_dir=scratch_dir,
    )
    evaluation.metrics["score"], evaluation.logs

Timing runs first (in the sandbox, through the protocol), verification after, outside the sandbox,
so the reference never shares a machine moment with the code it judges. Any failure raises
:class:`~edc.errors.RunFailed` with a reason, a sentence and the sandbox's logs.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edc.config import Settings
from edc.errors import RunFailed
from edc.harness import metrics as m
from edc.harness.bandwidth import machine_bandwidth_gb_per_s
from edc.harness.disclosure import GENERIC_SENTENCES
from edc.harness.runner import (
    RequestRecord,
    RequestSpec,
    SessionLimits,
    SessionPlan,
    SessionResult,
    run_session,
)
from edc.harness.verify import FaultKind, RequestOutput, VerificationReport, verify_outputs
from edc.models import FailureReason
from edc.sandbox.base import Sandbox
from edc.tasks.task import Prompt, RequestPlan, Task, bundled_task_dir

PromptSet = Literal["hidden", "public"]
PHASES = ("start", "load", "warmup", "latency", "throughput", "verify", "done")


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


def task_dir(settings: Settings) -> Path:
    return settings.task_dir if settings.task_dir is not None else bundled_task_dir()


def load_task(settings: Settings, override: Path | None = None) -> Task:
    """The task to judge against: ``override``, else ``EDC_TASK_DIR``, else the bundled one."""
    return Task.load(override if override is not None else task_dir(settings))


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
    )


def request_plan(task: Task, prompts: Sequence[Prompt]) -> RequestPlan:
    """The task's split; a prompt file too short for it (a public set) is reused under new ids.

    A reused prompt gets a fresh request id, hence fresh sampling noise and a different answer,
    so no output can be replayed from an earlier request.
    """
    needed = task.requests.total
    if len(prompts) >= needed:
        return task.request_plan(list(prompts))
    extended = list(prompts)
    for i in range(len(prompts), needed):
        p = prompts[i % len(prompts)]
        extended.append(Prompt(f"{p.id}~{i // len(prompts)}", p.text, p.tokens))
    return task.request_plan(extended)


def session_plan(task: Task, plan: RequestPlan) -> SessionPlan:
    def specs(prompts: Sequence[Prompt]) -> tuple[RequestSpec, ...]:
        return tuple(RequestSpec(p.id, p.tokens) for p in prompts)

    rule = task.sampling
    return SessionPlan(
        warmup=specs(plan.warmup),
        latency=tuple(specs(repeat) for repeat in plan.timed),
        throughput=specs(plan.throughput),
        max_new_tokens=task.max_new_tokens,
        vocab_size=task.vocab_size,
        sampling={"rule": rule.kind, "temperature": rule.temperature, "seed": rule.seed},
    )


def evaluate_submission(
    *,
    settings: Settings,
    sandbox: Sandbox,
    submission_dir: Path,
    task: Task,
    run_dir: Path,
    prompt_set: PromptSet = "hidden",
    progress: Callable[[ProgressEvent], None] | None = None,
    labels: Mapping[str, str] | None = None,
) -> Evaluation:
    """Time the submission in ``sandbox``, verify every token, and compute the metrics."""

    def report(phase: str, done: int, total: int) -> None:
        if progress is not None:
            progress(ProgressEvent(phase, done, total))

    prompts = task.hidden_prompts() if prompt_set == "hidden" else task.public_prompts()
    plan = session_plan(task, request_plan(task, prompts))
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
    verification = verify_outputs(
        task,
        [RequestOutput(r.request_id, r.prompt, r.tokens) for r in records],
        cache_dir=settings.data_dir / "reference",
    )
    report("verify", len(records), len(records))
    if not verification.correct:
        raise RunFailed(
            FailureReason.WRONG_OUTPUT,
            verification.message,
            logs=session.logs,
            public_message=_wrong_output_facts(verification, records),
        )
    result = Evaluation(metrics=compute_metrics(task, session, verification), logs=session.logs)
    report("done", len(records), len(records))
    return result


def compute_metrics(
    task: Task, session: SessionResult, verification: VerificationReport
) -> dict[str, Any]:
    bandwidth = task.hardware.memory_bandwidth_gbps or machine_bandwidth_gb_per_s()
    weights = weights_per_token(task.model_dir)
    floor = m.tpot_floor_ms(weights.bytes, bandwidth)
    physics = task.plausibility
    plausibility_floor = (
        m.tpot_floor_ms(round(weights.count * physics.bytes_per_weight), physics.memory_gbps)
        if physics is not None
        else None
    )
    throughput = session.throughput
    # The throughput scenario runs once; every timed repeat shares its figure.
    repeats = [
        m.RepeatTiming(
            latency=tuple(r.timing() for r in repeat),
            throughput_tokens=throughput.tokens,
            throughput_start_ns=throughput.start_ns,
            throughput_end_ns=throughput.end_ns,
        )
        for repeat in session.latency
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
    )


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


@dataclass(frozen=True)
class WeightsPerToken:
    """What one decode step reads of the weights: every tensor once, except that an untied input
    embedding contributes a single row (a lookup), not the whole table."""

    bytes: int  # as stored
    count: int  # weights, whatever their format


def weights_per_token(model_dir: Path) -> WeightsPerToken:
    tensors: dict[str, tuple[int, tuple[int, ...]]] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        with path.open("rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            header: dict[str, Any] = json.loads(fh.read(header_len))
        for name, info in header.items():
            if name != "__metadata__":
                start, end = info["data_offsets"]
                tensors[name] = (end - start, tuple(info["shape"]))
    size = sum(nbytes for nbytes, _ in tensors.values())
    count = sum(math.prod(shape) for _, shape in tensors.values())
    embed = tensors.get("model.embed_tokens.weight")
    if embed is not None and "lm_head.weight" in tensors:
        nbytes, shape = embed
        rows = max(shape[0], 1)
        size -= nbytes - nbytes // rows
        count -= math.prod(shape) - math.prod(shape) // rows
    return WeightsPerToken(bytes=size, count=count)


def weight_bytes_per_token(model_dir: Path) -> int:
    return weights_per_token(model_dir).bytes

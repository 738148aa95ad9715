"""The task page's facts: what a visitor may know of the task, its rules and the submission format,
from the loaded task and the settings. Built from an explicit list of public fields, so nothing
hidden (the hidden prompts, an evaluation's seed) can reach the page by accident."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edc.config import Settings
from edc.harness.protocol import MAX_LINE_BYTES, PROTOCOL_VERSION
from edc.harness.runner import DEFAULT_STEP_TIMEOUT_S, SHUTDOWN_GRACE_S
from edc.portal.presentation import metric_label, score_explanation, when
from edc.services.rules import Limits, Window
from edc.tasks.task import Task


@dataclass(frozen=True)
class Fact:
    label: str
    value: str


@dataclass(frozen=True)
class TaskFacts:
    """What a participant may know of the task and the rules; built from an explicit list of
    fields, so nothing hidden (the evaluation's seed, the hidden pool) can slip onto the page."""

    name: str
    version: str
    description: str
    vocab_size: int
    max_new_tokens: int
    sampling: dict[str, Any]  # the rule as the `load` message carries it, seed left out
    protocol_version: int
    sections: list[tuple[str, list[Fact]]]


def _seconds_limit(value: float) -> str:
    return f"{value:g} s"


def _sampling_words(task: Task) -> str:
    rule = task.sampling
    if rule.kind == "greedy":
        return "greedy: the token with the highest logit"
    return (
        f"hashed Gumbel-max at temperature {rule.temperature:g}: deterministic noise from each "
        "request's own key, sent with the request"
    )


def _decoding_facts(task: Task) -> list[Fact]:
    requests = task.requests
    tokenizer = {
        "bytes": "prompts are UTF-8 bytes, one token per byte",
        "ids": "prompts are token ids",
    }[task.spec.model.tokenizer]
    return [
        Fact("Model", f"Llama layout, vocabulary of {task.vocab_size} tokens; {tokenizer}"),
        Fact("Tokens per request", _tokens_words(task)),
        Fact("Sampling", _sampling_words(task)),
        Fact(
            "Correctness",
            f"every token within ε = {task.epsilon:g} of the best score at its position, judged "
            "on your own prefix by a trusted reference",
        ),
        Fact(
            "Requests",
            f"{requests.warmup} warm-up (not timed); then in each of {requests.repeats} "
            f"run{'s' if requests.repeats != 1 else ''}, {requests.timed} timed one at a time "
            f"and {requests.throughput} sent all at once for throughput",
        ),
        *_serving_facts(task),
        Fact("Hardware class", task.hardware.kind),
        Fact(
            "What a decoder may import",
            f"the Python standard library and {', '.join(task.runtime.imports)}, nothing else",
        ),
    ]


def _tokens_words(task: Task) -> str:
    if task.serving is None or task.serving_lengths[0] == task.max_new_tokens:
        return f"exactly {task.max_new_tokens}"
    low, high = task.serving_lengths
    return (
        f"exactly {task.max_new_tokens}, except in the serving scenario: exactly what each "
        f"request asks for, {low} to {high}"
    )


def _serving_facts(task: Task) -> list[Fact]:
    serving = task.serving
    if serving is None:
        return []
    rates = ", ".join(f"{r:g}" for r in serving.rates)
    return [
        Fact(
            "Serving scenario",
            f"{serving.requests_per_rate} requests per offered rate, arriving at random "
            f"(gamma gaps, burstiness {serving.burstiness:g}), at {rates} requests/s until one "
            f"is not held, then {serving.refine_steps} bisection"
            f"{'s' if serving.refine_steps != 1 else ''} and {serving.confirm} confirmation"
            f"{'s' if serving.confirm != 1 else ''}",
        ),
        Fact(
            "Serving SLO",
            f"first token within {serving.ttft_slo_ms:g} ms, last within "
            f"{serving.ttft_slo_ms:g} ms + {serving.tpot_slo_ms:g} ms per further token, for "
            f"{serving.target_share:.0%} of requests",
        ),
    ]


def _limit_facts(task: Task, settings: Settings) -> list[Fact]:
    limits = task.limits
    return [
        Fact("Load (start → ready)", _seconds_limit(limits.load_timeout_s)),
        Fact("Run (ready → last token)", _seconds_limit(limits.run_timeout_s)),
        Fact("Silence while a request waits", _seconds_limit(DEFAULT_STEP_TIMEOUT_S)),
        Fact("Memory", f"{limits.memory_mb} MB"),
        Fact("CPUs", f"{limits.cpus:g}"),
        Fact("Processes", f"{limits.pids}"),
        Fact("Writable /tmp", f"{settings.scratch_mb} MB"),
        Fact("Logs kept", f"{settings.log_cap_bytes // 1024} KB per stream (stdout, stderr)"),
    ]


def _ranking_facts(task: Task) -> list[Fact]:
    ranking = task.ranking
    return [
        Fact("Ranked by", f"{metric_label(ranking.metric)}, {ranking.direction} is better"),
        Fact("Score", score_explanation(ranking.metric, ranking.direction)),
        Fact(
            "Entry",
            "each participant's best correct archive; resubmissions of the same archive "
            "are pooled into one entry",
        ),
    ]


def _competition_facts(
    settings: Settings, now: datetime, window: Window | None, limits: Limits | None
) -> list[Fact]:
    window = window or Window.from_settings(settings)
    limits = limits or Limits.from_settings(settings)
    return [
        Fact("Window", window.describe(now)),
        Fact("Opens", when(window.start) or "no start set"),
        Fact("Closes", when(window.end) or "no end set"),
        Fact(
            "Submissions",
            f"{limits.per_day} per participant per 24 hours (rolling), "
            f"{limits.max_waiting} waiting or running at once; cancelled ones and "
            "failures that were the platform's fault do not count",
        ),
    ]


def _upload_facts(settings: Settings) -> list[Fact]:
    facts = [
        Fact("Archive", f"a zip of at most {settings.max_upload_mb} MB"),
        Fact(
            "Unpacked",
            f"at most {settings.max_unpacked_mb} MB in {settings.max_archive_entries} entries, "
            f"compressed at most {settings.max_compression_ratio:g} to 1",
        ),
        Fact("Protocol line", f"at most {MAX_LINE_BYTES // (1024 * 1024)} MiB"),
        Fact("After shutdown", f"exit within {SHUTDOWN_GRACE_S:g} s"),
    ]
    if settings.public_check:
        facts.append(
            Fact(
                "Public check",
                "a quick run on public prompts comes first; its output is yours to read",
            )
        )
    return facts


def task_facts(
    task: Task,
    settings: Settings,
    *,
    now: datetime,
    window: Window | None = None,
    limits: Limits | None = None,
) -> TaskFacts:
    """``window``: the track's upload window, ``limits``: each participant's allowance in it
    (default: the platform's)."""
    sampling: dict[str, Any] = {"rule": task.sampling.kind}
    if task.sampling.kind == "gumbel":
        sampling["temperature"] = task.sampling.temperature
    return TaskFacts(
        name=task.name,
        version=task.version,
        description=task.description,
        vocab_size=task.vocab_size,
        max_new_tokens=task.max_new_tokens,
        sampling=sampling,
        protocol_version=PROTOCOL_VERSION,
        sections=[
            ("Decoding", _decoding_facts(task)),
            ("Limits", _limit_facts(task, settings)),
            ("Ranking", _ranking_facts(task)),
            ("Competition", _competition_facts(settings, now, window, limits)),
            ("Submission", _upload_facts(settings)),
        ],
    )

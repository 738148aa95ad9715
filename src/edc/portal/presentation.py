"""How things look on the pages, in one place: status badges, the key figures of a result and
the notices about it (a review flag, a score from an older rule), metric names in words, times and
durations, and the organisers' actions a submission's state allows."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from edc.status import ReviewState, SubmissionStatus

# Bootstrap colour per status.
STATUS_BADGE: dict[SubmissionStatus, str] = {
    SubmissionStatus.QUEUED: "secondary",
    SubmissionStatus.PROCESSING: "primary",
    SubmissionStatus.COMPLETED: "success",
    SubmissionStatus.FAILED: "danger",
    SubmissionStatus.CANCELLED: "dark",
}


@dataclass(frozen=True)
class Figure:
    label: str
    value: str


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e6:
        return f"{int(value)}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def number(value: float | None) -> str:
    """A figure for a table cell; blank when there is none."""
    if value is None or not math.isfinite(value):
        return ""
    return _number(value)


def _bytes(value: float) -> str:
    return f"{value / (1024 * 1024):,.1f} MB"


def _seconds(value: float) -> str:
    return f"{value:.2f} s"


def _ms(value: float) -> str:
    return f"{_number(value)} ms"


def tokens_per_s(value: float) -> str:
    """Throughput, in the one unit every page uses."""
    return f"{_number(value)} tok/s"


# (label, path into the metrics, format): shown in this order, each only when present.
_FIGURES: list[tuple[str, tuple[str, ...], Callable[[float], str]]] = [
    ("score", ("score",), _number),
    ("E2E per token p50", ("latency", "e2e_per_token_ms", "p50"), _ms),
    ("TPOT p50", ("latency", "tpot_ms", "p50"), _ms),
    ("TTFT p50", ("latency", "ttft_ms", "p50"), _ms),
    ("throughput", ("throughput", "output_tokens_per_s"), tokens_per_s),
    ("wall", ("wall_s",), _seconds),
    ("exit code", ("exit_code",), _number),
    ("peak memory", ("peak_memory_bytes",), _bytes),
]


def _lookup(metrics: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = metrics
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def key_figures(metrics: Mapping[str, Any] | None) -> list[Figure]:
    """The figures worth a glance; anything missing or not a number is left out, not guessed."""
    if not isinstance(metrics, Mapping):
        return []
    figures = []
    correct = metrics.get("correct")
    if isinstance(correct, bool):
        figures.append(Figure("correct", "yes" if correct else "no"))
    for label, path, fmt in _FIGURES:
        value = _lookup(metrics, path)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            figures.append(Figure(label, fmt(float(value))))
    return figures


@dataclass(frozen=True)
class Notice:
    level: Literal["warning", "info"]
    text: str


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def result_notices(metrics: Mapping[str, Any] | None, review: ReviewState | None) -> list[Notice]:
    """What the participant should know about how the result counts, in words."""
    if not isinstance(metrics, Mapping):
        return []
    notices = []
    check = metrics.get("plausibility")
    check = check if isinstance(check, Mapping) else {}
    figure = check.get("figure") if isinstance(check.get("figure"), str) else "the ranked figure"
    value, floor = _finite(check.get("value")), _finite(check.get("floor_ms"))
    measured = f"{figure} = {_ms(value)}" if value is not None else str(figure)
    bound = f" (floor {_ms(floor)})" if floor is not None else ""
    if review == ReviewState.FLAGGED:
        notices.append(
            Notice(
                "warning",
                f"Flagged for review: faster than the task's physical floor: {measured}{bound}. "
                "It stays ranked, marked, until an organiser clears it or disqualifies it.",
            )
        )
    elif review == ReviewState.CLEARED:
        notices.append(
            Notice(
                "info",
                f"Review cleared: an organiser accepted this result, though {measured} is faster "
                f"than the task's physical floor{bound}.",
            )
        )
    if metrics.get("stale") is True and isinstance(metrics.get("stale_version"), str):
        notices.append(
            Notice(
                "warning",
                "Stale: measured under another version of the task or of the measurement, so "
                "it is off the leaderboard until it is measured again (organisers re-measure "
                "the best stale entries).",
            )
        )
    elif metrics.get("stale") is True:
        old = metrics.get("stale_metric")
        under = f" ({old})" if isinstance(old, str) else ""
        notices.append(
            Notice(
                "warning",
                f"Stale: scored under an older rule{under}, so it is off the leaderboard; "
                "an organiser can re-run it.",
            )
        )
    failed = metrics.get("remeasure_failed")
    if isinstance(failed, dict):
        notices.append(Notice("warning", f"Measured again, it failed: {failed.get('message')}"))
    if "rescored_from" in metrics:
        old = metrics["rescored_from"]
        ranked = old if isinstance(old, str) else "a figure it did not record"
        notices.append(
            Notice(
                "info",
                f"Re-scored: measured when the task ranked {ranked}; the score was "
                f"converted exactly to {metrics.get('score_metric')} from its stored figures. "
                "It has no interval, as the old one was of the old figure.",
            )
        )
    return notices


# --- metric names in words -----------------------------------------------------------------------

# The latency families the harness reports (docs/submission-format.md), in words.
_LATENCY_NAMES: dict[str, str] = {
    "e2e_per_token_ms": "End-to-end time per token",
    "e2e_ms": "End-to-end time per request",
    "tpot_ms": "Time per output token after the first (TPOT)",
    "ttft_ms": "Time to first token (TTFT)",
    "itl_ms": "Inter-token latency (ITL)",
}
_STATISTICS: dict[str, str] = {
    "p50": "the median",
    "p90": "the 90th percentile",
    "p99": "the 99th percentile",
    "mean": "the mean",
}


@dataclass(frozen=True)
class MetricName:
    """A metric key such as ``latency.e2e_per_token_ms.p50`` in words."""

    name: str  # "End-to-end time per token"
    statistic: str | None  # "p50", over the timed requests of one run
    unit: str  # "ms", "tok/s"; "" when unknown

    @property
    def label(self) -> str:
        text = self.name + (f", {self.statistic}" if self.statistic else "")
        return text + (f" ({self.unit})" if self.unit else "")


def metric_name(key: str) -> MetricName:
    """The words for a metric key; an unknown key is shown as it is, not guessed at."""
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "latency" and parts[1] in _LATENCY_NAMES:
        return MetricName(_LATENCY_NAMES[parts[1]], parts[2], "ms")
    if key == "throughput.output_tokens_per_s":
        return MetricName("Output throughput, all requests at once", None, "tok/s")
    return MetricName(key, None, "")


def metric_label(key: str) -> str:
    """``latency.e2e_per_token_ms.p50`` → ``End-to-end time per token, p50 (ms)``."""
    return metric_name(key).label


def score_explanation(key: str, direction: str) -> str:
    """What a score on the leaderboard is, exactly, in two sentences."""
    metric = metric_name(key)
    over = ""
    if metric.statistic in _STATISTICS:
        over = f": {_STATISTICS[metric.statistic]} over the timed requests of a run"
    return (
        f"The score is {metric.label}{over}; {direction} is better. Each evaluation times the "
        "task's latency scenario several times: its score is the median of those runs, with a "
        "95% interval [low – high] of where another run would land."
    )


@dataclass(frozen=True)
class ReportedColumn:
    """A figure the leaderboard shows beside the score: reported, never ranked."""

    field: str  # the leaderboard entry's attribute
    metric: str  # the metric key it is a figure of
    header: str
    unit: str

    @property
    def title(self) -> str:
        return metric_label(self.metric)

    def cell(self, entry: Any) -> str:
        value = _finite(getattr(entry, self.field, None))
        if value is None:
            return ""
        return tokens_per_s(value) if self.unit == "tok/s" else f"{_number(value)} {self.unit}"


_REPORTED = (
    ReportedColumn("tpot_p50_ms", "latency.tpot_ms.p50", "TPOT p50", "ms"),
    ReportedColumn("ttft_p50_ms", "latency.ttft_ms.p50", "TTFT p50", "ms"),
    ReportedColumn("output_tokens_per_s", "throughput.output_tokens_per_s", "Throughput", "tok/s"),
)


def reported_columns(ranked: str) -> list[ReportedColumn]:
    """The figures shown beside the score, less the ranked one: the score already is that
    figure (pooled over runs), and a second column of it would differ without saying why."""
    return [c for c in _REPORTED if c.metric != ranked]


# --- times and durations -------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive UTC times, PostgreSQL aware ones.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def when(moment: datetime | None) -> str:
    """A time in UTC, to the minute (for lists)."""
    if moment is None:
        return ""
    return _utc(moment).strftime("%Y-%m-%d %H:%M UTC")


def when_exact(moment: datetime | None) -> str:
    """A time in UTC, to the second (for one submission's page)."""
    if moment is None:
        return ""
    return _utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float) -> str:
    """``0.4 s``, ``42 s``, ``1 min 32 s``, ``2 h 5 min``, ``3 d 4 h``: two units at most."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return _two_units(whole, 60, "min", 1, "s")
    if whole < 86400:
        return _two_units(whole, 3600, "h", 60, "min")
    return _two_units(whole, 86400, "d", 3600, "h")


def _two_units(whole: int, big: int, big_name: str, small: int, small_name: str) -> str:
    major, rest = divmod(whole, big)
    minor = rest // small
    return f"{major} {big_name}" + (f" {minor} {small_name}" if minor else "")


def duration_between(start: datetime | None, end: datetime | None) -> str:
    """How long from ``start`` to ``end``; blank unless both are known and in order."""
    if start is None or end is None:
        return ""
    seconds = (_utc(end) - _utc(start)).total_seconds()
    return duration(seconds) if seconds >= 0 else ""


def timing_figures(
    queued_at: datetime | None, started_at: datetime | None, finished_at: datetime | None
) -> list[Figure]:
    """How long the submission waited, then ran: each only once it is over (so a live page's
    figures change only when its state does)."""
    figures = []
    waited = duration_between(queued_at, started_at)
    if waited:
        figures.append(Figure("queued for", waited))
    ran = duration_between(started_at, finished_at)
    if ran:
        figures.append(Figure("ran for", ran))
    return figures


def timing_text(
    queued_at: datetime | None, started_at: datetime | None, finished_at: datetime | None
) -> str:
    """The same, in one line for a table cell: ``queued 12 s · ran 1 min 32 s``."""
    parts = [
        f"{f.label.removesuffix(' for')} {f.value}"
        for f in timing_figures(queued_at, started_at, finished_at)
    ]
    return " · ".join(parts)


# --- what organisers may do to a submission ------------------------------------------------------


@dataclass(frozen=True)
class AdminAction:
    name: str  # the action of POST /admin/submissions/{id}/{action}
    label: str
    style: str  # Bootstrap colour of the button


_WAITING = (SubmissionStatus.QUEUED, SubmissionStatus.PROCESSING)


def admin_actions(
    status: SubmissionStatus, *, disqualified: bool, baseline: bool, review: ReviewState | None
) -> list[AdminAction]:
    """The buttons a submission's state allows: each pair that undoes the other shows one side,
    and cancel / rerun follow the states moderation accepts them in (anything else is refused)."""
    actions = [
        AdminAction("cancel", "Cancel", "danger")
        if status in _WAITING
        else AdminAction("rerun", "Rerun", "primary")
    ]
    if review == ReviewState.FLAGGED:
        actions.append(AdminAction("clear-review", "Clear review flag", "success"))
    actions.append(
        AdminAction("restore", "Restore", "secondary")
        if disqualified
        else AdminAction("disqualify", "Disqualify", "danger")
    )
    actions.append(
        AdminAction("unbaseline", "Unmark baseline", "secondary")
        if baseline
        else AdminAction("baseline", "Mark baseline", "secondary")
    )
    return actions

"""How submissions look on the pages: status badges, the key figures of a result, and the
notices about it (a review flag, a score from an older rule)."""

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


def _per_s(value: float) -> str:
    return f"{_number(value)}/s"


# (label, path into the metrics, format): shown in this order, each only when present.
_FIGURES: list[tuple[str, tuple[str, ...], Callable[[float], str]]] = [
    ("score", ("score",), _number),
    ("E2E per token p50", ("latency", "e2e_per_token_ms", "p50"), _ms),
    ("TPOT p50", ("latency", "tpot_ms", "p50"), _ms),
    ("TTFT p50", ("latency", "ttft_ms", "p50"), _ms),
    ("throughput", ("throughput", "output_tokens_per_s"), _per_s),
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
    if metrics.get("stale") is True:
        old = metrics.get("stale_metric")
        under = f" ({old})" if isinstance(old, str) else ""
        notices.append(
            Notice(
                "warning",
                f"Stale: scored under an older rule{under}, so it is off the leaderboard; "
                "an organiser can re-run it.",
            )
        )
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


def when(moment: datetime | None) -> str:
    """A time in UTC (SQLite hands back naive UTC times, PostgreSQL aware ones)."""
    if moment is None:
        return ""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")

"""A worker's calibration: its recent timings of each track's baseline, published in Redis.

The drift watch (``drift.py``) measures; this module keeps the figures, one set per track and
hardware class (a track's baseline is timed only against the same baseline on the same class),
and derives from them the worker's **run-to-run spread** in a track: the relative standard
deviation (sample CV) of the track's baseline's ranked score over its recent timings. Evaluations
widen their interval by it, so the uncertainty shown covers the noise between runs, not only the
noise within one (``docs/ranking.md``).

Which spread an evaluation uses, in order: this worker's own (once it has ``MIN_RUNS`` timings),
the median of the fleet's (other workers of the class, in the track), else the task's stated prior
(``[hardware] run_to_run_spread``). The prior is also a floor: a CV estimated from a handful of
baseline timings is itself noisy, and an interval too narrow is worse than one too wide.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from edc.config import Settings
from edc.errors import ServiceUnavailable
from edc.scheduler.connection import redis_connection, redis_errors

# Baseline timings before a worker's own spread is trusted; and how many recent ones it keeps.
MIN_RUNS = 3
RECENT_RUNS = 8


@dataclass(frozen=True)
class Calibrated:
    """What a set of baseline figures is of: one track's baseline on one hardware class."""

    hardware_class: str
    track: str


def figures_key(settings: Settings, of: Calibrated) -> str:
    return f"edc:{settings.deployment_id}:baseline:{of.hardware_class}:{of.track}"


@dataclass(frozen=True)
class Spread:
    value: float  # relative: what the interval is widened by (the measured one, or the floor)
    source: Literal["worker", "fleet", "task"]
    runs: int  # baseline timings behind it (0 for the task's prior)
    measured: float | None = None  # the sample CV of the baseline's ranked score, if any

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "source": self.source,
            "runs": self.runs,
            "measured": self.measured,
        }


def with_floor(measured: float, prior: float) -> float:
    """The spread an interval is widened by: the measured one, never below the task's prior."""
    return max(measured, prior)


def relative_spread(figures: Sequence[float]) -> float | None:
    """The sample CV of ``figures``; None with fewer than ``MIN_RUNS`` of them."""
    if len(figures) < MIN_RUNS:
        return None
    mean = statistics.fmean(figures)
    return statistics.stdev(figures) / mean if mean > 0 else None


@dataclass(frozen=True)
class WorkerFigures:
    """One worker's published calibration."""

    latest: float  # its last baseline figure (what the drift watch compares)
    recent: tuple[float, ...]
    at: float  # unix time of the last timing

    @property
    def spread(self) -> float | None:
        return relative_spread(self.recent)

    def encode(self) -> str:
        return json.dumps({"figure": self.latest, "recent": list(self.recent), "at": self.at})

    @classmethod
    def decode(cls, raw: bytes | str) -> WorkerFigures:
        data = json.loads(raw)
        # Before the spread existed a worker published only {"tpot_ms", "at"}.
        latest = float(data.get("figure", data.get("tpot_ms", 0.0)))
        return cls(latest, tuple(float(x) for x in data.get("recent", [latest])), float(data["at"]))


def fleet(settings: Settings, of: Calibrated) -> dict[str, WorkerFigures]:
    """Every worker's published figures of ``of`` (this one's included)."""
    connection = redis_connection(settings)
    out = {}
    for name, raw in connection.hgetall(figures_key(settings, of)).items():
        out[name.decode() if isinstance(name, bytes) else name] = WorkerFigures.decode(raw)
    return out


def record(settings: Settings, worker: str, of: Calibrated, figure: float) -> WorkerFigures:
    """Add a baseline timing to ``worker``'s recent ones of ``of`` and publish them."""
    connection = redis_connection(settings)
    key = figures_key(settings, of)
    raw = connection.hget(key, worker)
    recent = WorkerFigures.decode(raw).recent if raw is not None else ()
    mine = WorkerFigures(figure, (*recent, figure)[-RECENT_RUNS:], time.time())
    connection.hset(key, worker, mine.encode())
    return mine


def run_to_run_spread(settings: Settings, worker: str, of: Calibrated, *, prior: float) -> Spread:
    """The spread an evaluation by ``worker`` in ``of.track`` widens its interval with (see the
    module doc)."""
    try:
        with redis_errors():
            figures = fleet(settings, of)
    except ServiceUnavailable:
        figures = {}  # the queue is down: the result still gets an honest (prior) interval
    own = figures.get(worker)
    if own is not None and own.spread is not None:
        return Spread(with_floor(own.spread, prior), "worker", len(own.recent), own.spread)
    spreads = [
        (f.spread, len(f.recent))
        for name, f in figures.items()
        if name != worker and f.spread is not None
    ]
    if spreads:
        value = statistics.median(s for s, _ in spreads)
        return Spread(with_floor(value, prior), "fleet", sum(n for _, n in spreads), value)
    return Spread(prior, "task", 0)

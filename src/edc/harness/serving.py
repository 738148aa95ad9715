"""The serving scenario's metrics at one offered rate, and the sweep for the highest rate held.

Requests are sent on a schedule (``arrivals.py``) at an offered rate; every time is on the
harness's monotonic clock. For one offered rate, with ``duration`` from the first request's
*scheduled* send to the last chunk arrival of any request (names as vLLM's ``calculate_metrics``
where they coincide):

- ``request_throughput = requests / duration``
- ``output_throughput = Σ output tokens / duration`` (tokens/s)
- ``ttft_ms``, ``tpot_ms``, ``e2e_ms``: as ``metrics.py`` defines them, measured from the *actual*
  send (``timing.sent_ns``), as the latency scenario does; TPOT skips one-token requests.
- ``goodput = requests meeting the SLO / duration`` (DistServe), req/s
- ``slo_attainment = requests meeting the SLO / requests``
- ``send_lag_ms``: p50/p99/max of ``actual send − scheduled send``, how far the harness fell behind.

The SLO of a request of N tokens is ``TTFT <= ttft_slo`` and ``E2E <= ttft_slo + (N − 1)·tpot_slo``.
Unlike vLLM's goodput it bounds the request's end rather than its TPOT: a decoder that holds tokens
back and sends them at once has a TPOT of 0, and would meet a TPOT bound for free.

The maximum rate under the SLO is found by ``RateSweep``: ascend a list of rates, bisect between the
last one held and the first one missed, then confirm the best rate held with fresh measurements.
A task's time budget may stop the ascent or bisection early (``RateSweep.stop_searching``); the
confirmation still runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from edc.harness.metrics import NS_PER_MS, NS_PER_S, RequestTiming, summarize


@dataclass(frozen=True)
class Slo:
    """Per-request bounds: the first token within ``ttft_ms``, then ``tpot_ms`` per later token."""

    ttft_ms: float
    tpot_ms: float

    def __post_init__(self) -> None:
        if not (self.ttft_ms > 0 and self.tpot_ms > 0):
            raise ValueError("SLO bounds must be positive times")

    def e2e_bound_ms(self, tokens: int) -> float:
        return self.ttft_ms + (tokens - 1) * self.tpot_ms

    def met(self, timing: RequestTiming) -> bool:
        return (
            timing.ttft_ns / NS_PER_MS <= self.ttft_ms
            and timing.e2e_ns / NS_PER_MS <= self.e2e_bound_ms(timing.tokens)
        )


@dataclass(frozen=True)
class ServedRequest:
    """One request of the serving scenario: its slot in the schedule and what happened to it."""

    scheduled_ns: int  # when the schedule said to send it (harness clock)
    timing: RequestTiming  # sent_ns is when the harness actually wrote it

    @property
    def send_lag_ns(self) -> int:
        """Reported as is, not clamped: a negative lag would be a harness bug worth seeing."""
        return self.timing.sent_ns - self.scheduled_ns


def rate_metrics(
    offered_rate: float, requests: Sequence[ServedRequest], slo: Slo
) -> dict[str, Any]:
    """The metrics of one offered rate, as the module docstring defines them."""
    if not requests:
        raise ValueError("no requests were served at this rate")
    timings = [r.timing for r in requests]
    start_ns = min(r.scheduled_ns for r in requests)
    end_ns = max(t.chunk_arrivals_ns[-1] for t in timings)
    if end_ns <= start_ns:
        raise ValueError("the serving window must have a positive length")
    duration_s = (end_ns - start_ns) / NS_PER_S
    tpots = [t.tpot_ns / NS_PER_MS for t in timings if t.tpot_ns is not None]
    good = sum(slo.met(t) for t in timings)
    lags_ms = np.asarray([r.send_lag_ns / NS_PER_MS for r in requests], dtype=np.float64)
    return {
        "offered_rate": offered_rate,
        "requests": len(requests),
        "duration_s": duration_s,
        "request_throughput": len(requests) / duration_s,
        "output_throughput": sum(t.tokens for t in timings) / duration_s,
        "ttft_ms": summarize([t.ttft_ns / NS_PER_MS for t in timings]),
        "tpot_ms": summarize(tpots or [0.0]),
        "e2e_ms": summarize([t.e2e_ns / NS_PER_MS for t in timings]),
        "goodput": good / duration_s,
        "slo_attainment": good / len(requests),
        "send_lag_ms": {
            "p50": float(np.percentile(lags_ms, 50.0)),
            "p99": float(np.percentile(lags_ms, 99.0)),
            "max": float(lags_ms.max()),
        },
    }


def attained(metrics: Mapping[str, Any], target_share: float) -> bool:
    """Whether the SLO held for at least ``target_share`` of the requests at this rate."""
    return float(metrics["slo_attainment"]) >= target_share


@dataclass(frozen=True)
class SweepPoint:
    """One measurement of the sweep: an offered rate and whether the SLO held there."""

    rate: float
    attained: bool


class RateSweep:
    """The highest offered rate at which the SLO holds, one measurement at a time.

    Ascend ``rates`` to the first that misses; bisect ``refine_steps`` times between the highest
    rate held (0 if none) and the lowest missed; then measure the best rate held ``confirm`` more
    times. A miss there marks it as failing and the next best rate held below it is confirmed in
    turn. Candidates only go down and each gets at most ``confirm`` measurements, so it ends.
    """

    def __init__(self, rates: Sequence[float], refine_steps: int, confirm: int) -> None:
        if not rates:
            raise ValueError("the sweep needs at least one rate")
        if any(not r > 0 for r in rates):
            raise ValueError("every rate of the sweep must be positive")
        if any(b <= a for a, b in pairwise(rates)):
            raise ValueError("the sweep's rates must be strictly ascending")
        if refine_steps < 0 or confirm < 0:
            raise ValueError("refine_steps and confirm cannot be negative")
        self._rates = tuple(rates)
        self._refine_steps = refine_steps
        self._confirm = confirm
        self._points: list[SweepPoint] = []
        self._phase = "ascend"  # then "bisect", then "confirm"
        self._index = 0  # the listed rate being measured while ascending
        self._low = 0.0  # bisection bracket: highest rate held …
        self._high = 0.0  # … and lowest rate missed
        self._steps = 0  # bisection steps taken
        self._confirmed = 0  # confirmations passed by the current candidate
        self._next: float | None = self._rates[0]

    def next_rate(self) -> float | None:
        """The rate to measure next; None when the sweep is over."""
        return self._next

    def record(self, rate: float, attained: bool) -> None:
        """The outcome of measuring the rate ``next_rate`` gave."""
        if self._next is None:
            raise ValueError("the sweep is over")
        if rate != self._next:
            raise ValueError(f"the sweep asked for rate {self._next}, not {rate}")
        self._points.append(SweepPoint(rate, attained))
        self._next = self._advance(rate, attained)

    def stop_searching(self) -> bool:
        """Measure no more new rates: go straight to confirming the best rate held so far (the
        sweep's time budget is spent). True when this cut the search short."""
        if self._next is None or self._phase == "confirm":
            return False
        self._next = self._start_confirming()
        return True

    @property
    def points(self) -> tuple[SweepPoint, ...]:
        return tuple(self._points)

    def result(self) -> tuple[float, tuple[float, float]]:
        """``(max_rate_under_slo, interval)`` from the points so far (final once the sweep is over).

        The interval is the sweep's resolution bracket: the true maximum lies between a rate held
        at every measurement and the lowest rate above it that was not (the rate itself when nothing
        above it failed, and 0.0 as the held side when nothing held).
        """
        best = self._best_held()
        above = [p.rate for p in self._points if p.rate > best and not p.attained]
        return best, (best, min(above, default=best))

    def _best_held(self) -> float:
        missed = {p.rate for p in self._points if not p.attained}
        return max((p.rate for p in self._points if p.rate not in missed), default=0.0)

    def _advance(self, rate: float, attained: bool) -> float | None:
        if self._phase == "ascend":
            if attained:
                self._low = rate
                self._index += 1
                if self._index < len(self._rates):
                    return self._rates[self._index]
                return self._start_confirming()  # every listed rate held: nothing to bisect
            self._high = rate
            self._phase = "bisect"
            return self._bisect()
        if self._phase == "bisect":
            if attained:
                self._low = rate
            else:
                self._high = rate
            self._steps += 1
            return self._bisect()
        if attained:
            self._confirmed += 1
            return rate if self._confirmed < self._confirm else None
        return self._start_confirming()

    def _bisect(self) -> float | None:
        if self._steps < self._refine_steps:
            return (self._low + self._high) / 2
        return self._start_confirming()

    def _start_confirming(self) -> float | None:
        self._phase = "confirm"
        self._confirmed = 0
        best = self._best_held()
        return best if best > 0 and self._confirm > 0 else None

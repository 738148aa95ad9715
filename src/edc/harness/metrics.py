"""Pure functions from arrival stamps to the published ``metrics`` (names are part of the API).

Every time here comes from the harness's own monotonic clock (``time.monotonic_ns``), taken when a
chunk arrived on the channel; the submission's clock is never used.

Definitions (as vLLM's and MLPerf's serving benchmarks use them):

- TTFT: from sending ``generate`` to the arrival of the chunk holding the first token.
- E2E: from sending ``generate`` to the arrival of the chunk holding the last token.
- TPOT: ``(E2E − TTFT) / (N − 1)`` for a request of N tokens.
- ITL: the wait for each token after the first. A chunk of k tokens that arrived ``gap`` after the
  previous chunk gives each of its tokens ``gap / k``; tokens that came in the first chunk, together
  with the first token, waited 0. So the ITLs of a request sum to ``E2E − TTFT``.
- E2E per token: ``E2E / N`` for a request of N tokens, the first included. The figure tasks rank:
  a token counts when it arrives, so holding tokens back or sending them in other chunks can only
  make it worse (``docs/ranking.md``). TPOT, ITL and TTFT depend on how tokens are grouped into
  chunks (a decoder that sends all of them at once has a TPOT of 0) and are reported, never ranked.
- Throughput: output tokens of every request ÷ (last arrival − first send), all requests at once;
  measured once per timed repeat, the median reported.
- Serving (``metrics.serving``): see :mod:`edc.harness.serving`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0}
LATENCY_METRICS = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "e2e_per_token_ms")
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 20261128
# The per-token time checked against the task's physical floor (one request at a time).
PLAUSIBILITY_FIGURE = "latency.e2e_per_token_ms.p50"


@dataclass(frozen=True)
class RequestTiming:
    """One request's life on the harness's clock."""

    request_id: str
    sent_ns: int  # when the harness wrote ``generate``
    chunk_arrivals_ns: tuple[int, ...]  # one stamp per chunk that carried tokens
    chunk_sizes: tuple[int, ...]  # tokens in each of those chunks

    def __post_init__(self) -> None:
        if len(self.chunk_arrivals_ns) != len(self.chunk_sizes) or not self.chunk_sizes:
            raise ValueError("a timed request needs one size per chunk and at least one chunk")
        if any(size <= 0 for size in self.chunk_sizes):
            raise ValueError("a timed chunk carries at least one token")

    @property
    def tokens(self) -> int:
        return sum(self.chunk_sizes)

    @property
    def ttft_ns(self) -> int:
        return self.chunk_arrivals_ns[0] - self.sent_ns

    @property
    def e2e_ns(self) -> int:
        return self.chunk_arrivals_ns[-1] - self.sent_ns

    @property
    def e2e_per_token_ns(self) -> float:
        return self.e2e_ns / self.tokens

    @property
    def tpot_ns(self) -> float | None:
        """None for a one-token request, which has no time per output token."""
        if self.tokens < 2:
            return None
        return (self.e2e_ns - self.ttft_ns) / (self.tokens - 1)

    def itl_ns(self) -> list[float]:
        """The wait of each token after the first, by position (length N − 1)."""
        waits: list[float] = [0.0] * (self.chunk_sizes[0] - 1)
        for i in range(1, len(self.chunk_sizes)):
            size = self.chunk_sizes[i]
            gap = self.chunk_arrivals_ns[i] - self.chunk_arrivals_ns[i - 1]
            waits.extend([gap / size] * size)
        return waits


def summarize(values_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99 (linear interpolation) and the mean."""
    if not values_ms:
        raise ValueError("no values to summarize")
    data = np.asarray(values_ms, dtype=np.float64)
    out = {name: float(np.percentile(data, q)) for name, q in PERCENTILES.items()}
    out["mean"] = float(data.mean())
    return out


def latency_samples(timings: Sequence[RequestTiming]) -> dict[str, list[float]]:
    """Every sample of every latency metric, in milliseconds."""
    samples: dict[str, list[float]] = {name: [] for name in LATENCY_METRICS}
    for t in timings:
        samples["ttft_ms"].append(t.ttft_ns / NS_PER_MS)
        samples["e2e_ms"].append(t.e2e_ns / NS_PER_MS)
        samples["e2e_per_token_ms"].append(t.e2e_per_token_ns / NS_PER_MS)
        tpot = t.tpot_ns
        if tpot is not None:
            samples["tpot_ms"].append(tpot / NS_PER_MS)
        samples["itl_ms"].extend(w / NS_PER_MS for w in t.itl_ns())
    return samples


def latency_metrics(timings: Sequence[RequestTiming]) -> dict[str, dict[str, float]]:
    """``latency.{ttft_ms,tpot_ms,itl_ms,e2e_ms,e2e_per_token_ms}.{p50,p90,p99,mean}``."""
    samples = latency_samples(timings)
    # A task of one-token requests has neither TPOT nor ITL: report zeros rather than omit the key.
    return {name: summarize(values or [0.0]) for name, values in samples.items()}


def itl_by_position_ms(timings: Sequence[RequestTiming]) -> list[float]:
    """The median ITL at each output position (1 … N−1) across requests, for plots."""
    series = [t.itl_ns() for t in timings]
    length = max((len(s) for s in series), default=0)
    out = []
    for position in range(length):
        values = [s[position] for s in series if len(s) > position]
        out.append(float(np.median(values)) / NS_PER_MS)
    return out


def output_tokens_per_s(tokens: int, start_ns: int, end_ns: int) -> float:
    """Tokens over the wall time between the first send and the last arrival."""
    if end_ns <= start_ns:
        raise ValueError("the throughput window must have a positive length")
    return tokens * NS_PER_S / (end_ns - start_ns)


def lookup(metrics: Mapping[str, Any], dotted: str) -> float:
    """``lookup(m, "latency.tpot_ms.p50")`` → ``m["latency"]["tpot_ms"]["p50"]``."""
    node: Any = metrics
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"no metric named {dotted!r}")
        node = node[part]
    if not isinstance(node, int | float) or isinstance(node, bool):
        raise KeyError(f"{dotted!r} is not a number")
    return float(node)


def bootstrap_ci(
    values: Sequence[float],
    *,
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median; seeded, so a result is reproducible."""
    if not values:
        raise ValueError("no values to bootstrap")
    data = np.asarray(values, dtype=np.float64)
    if len(data) == 1:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(data), size=(resamples, len(data)))
    medians = np.median(data[picks], axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(medians, [tail, 100.0 - tail])
    return float(low), float(high)


# A run's interval should hold another run of the same code (a prediction interval): two runs each
# off by a relative spread s differ by s·√2 in standard deviation, so 95% of them lie within
# 1.96·√2·s of each other.
PREDICTION_Z = 1.96 * math.sqrt(2.0)


def widen_for_run_to_run(
    score: float, interval: Sequence[float], spread: float
) -> tuple[float, float]:
    """``interval`` widened to at least ``score`` ± PREDICTION_Z·spread·score.

    Relative, so it serves any ranked figure (a time or a rate). The repeats inside one run see
    only a minute's noise; ``spread`` is the worker's measured variation between runs.
    """
    half = PREDICTION_Z * spread * abs(score)
    low, high = interval
    return min(low, score - half), max(high, score + half)


def tpot_floor_ms(weight_bytes_per_token: int, bandwidth_gb_per_s: float) -> float:
    """The least TPOT memory bandwidth allows: every weight byte read once per token."""
    if bandwidth_gb_per_s <= 0:
        raise ValueError("bandwidth must be positive")
    return weight_bytes_per_token / (bandwidth_gb_per_s * 1e9) * 1e3


def roofline(tpot_ms: float, floor_ms: float) -> float:
    """TPOT as a multiple of the bandwidth floor (1.0 = at the physical limit)."""
    if floor_ms <= 0 or not math.isfinite(floor_ms):
        raise ValueError("the floor must be a positive finite time")
    return tpot_ms / floor_ms


def plausibility(
    *, figure: str, value_ms: float, floor_ms: float | None, margin: float
) -> dict[str, Any] | None:
    """Whether a per-token time beats what the hardware allows; None when the task sets no floor.

    An implausible result is flagged for organisers to review, never hidden or failed here.
    """
    if floor_ms is None:
        return None
    return {
        "figure": figure,
        "value": value_ms,
        "floor_ms": floor_ms,
        "margin": margin,
        "implausible": value_ms < floor_ms * margin,
    }


@dataclass(frozen=True)
class RepeatTiming:
    """One timed repeat: its latency scenario and its throughput scenario."""

    latency: tuple[RequestTiming, ...]
    throughput_tokens: int
    throughput_start_ns: int
    throughput_end_ns: int

    def tokens_per_s(self) -> float:
        return output_tokens_per_s(
            self.throughput_tokens, self.throughput_start_ns, self.throughput_end_ns
        )

    def timing_metrics(self) -> dict[str, Any]:
        return {
            "latency": latency_metrics(self.latency),
            "throughput": {"output_tokens_per_s": self.tokens_per_s()},
        }


@dataclass(frozen=True)
class Verdict:
    """What verification found, as far as the metrics report it."""

    tokens_checked: int
    max_gap: float
    exact_match_rate: float
    first_divergence: Mapping[str, Any] | None  # {"request": id, "position": p} or None


def build_metrics(
    *,
    repeats: Sequence[RepeatTiming],
    verdict: Verdict,
    load_s: float,
    ranking_metric: str,
    floor_ms: float | None,
    bandwidth_gb_per_s: float | None,
    plausibility_floor_ms: float | None = None,
    plausibility_margin: float = 1.0,
    serving: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``metrics`` object exactly as design.md names it, plus a few additive extras.

    A figure of the serving sweep is ranked with the sweep's bracket as its interval (the rate
    held and the one missed); the others with the bootstrap interval of their repeats.
    """
    if not repeats:
        raise ValueError("at least one timed repeat is needed")
    pooled = [t for r in repeats for t in r.latency]
    per_repeat = [r.timing_metrics() for r in repeats]
    throughputs = [r.tokens_per_s() for r in repeats]
    latency = latency_metrics(pooled)
    if ranking_metric.startswith("serving."):
        if serving is None:
            raise ValueError(f"{ranking_metric!r} is ranked but no serving sweep ran")
        scores = [lookup({"serving": serving}, ranking_metric)]
        low, high = serving["max_rate_under_slo_bracket"]
    else:
        scores = [lookup(m, ranking_metric) for m in per_repeat]
        low, high = bootstrap_ci(scores)
    tpot_p50 = latency["tpot_ms"]["p50"]
    return {
        "correct": True,
        "tokens_checked": verdict.tokens_checked,
        "max_gap": verdict.max_gap,
        "exact_match_rate": verdict.exact_match_rate,
        "first_divergence": dict(verdict.first_divergence) if verdict.first_divergence else None,
        "latency": latency,
        "throughput": {"output_tokens_per_s": float(np.median(throughputs))},
        "load_s": load_s,
        "score": float(np.median(scores)),
        "score_ci": [low, high],
        "score_metric": ranking_metric,
        "score_repeats": scores,
        "roofline": roofline(tpot_p50, floor_ms) if floor_ms and tpot_p50 > 0 else None,
        "tpot_floor_ms": floor_ms,
        "bandwidth_gb_per_s": bandwidth_gb_per_s,
        "itl_ms_by_position": itl_by_position_ms(pooled),
        "plausibility": plausibility(
            figure=PLAUSIBILITY_FIGURE,
            value_ms=latency["e2e_per_token_ms"]["p50"],
            floor_ms=plausibility_floor_ms,
            margin=plausibility_margin,
        ),
        **({"serving": dict(serving)} if serving is not None else {}),
    }

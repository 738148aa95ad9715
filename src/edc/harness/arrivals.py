"""The serving scenario's schedule: when each request is sent and how many tokens it asks for.

As vLLM's ``benchmark_serving``: the gaps between sends are drawn from
``Gamma(shape=burstiness, scale=1 / (rate · burstiness))``, so their mean is ``1 / rate`` whatever
the burstiness and their coefficient of variation is ``1 / √burstiness``. ``burstiness = 1`` is a
Poisson process (exponential gaps); below 1 requests come in bursts, above 1 more evenly. Both draws
are seeded, so every participant faces the same schedule and the same output lengths.
"""

from __future__ import annotations

import numpy as np

from edc.harness.metrics import NS_PER_S


def arrival_offsets_ns(*, rate: float, count: int, burstiness: float, seed: int) -> list[int]:
    """Send offsets from the scenario's start: the first at 0, then cumulative gamma gaps."""
    if not rate > 0:
        raise ValueError("the request rate must be positive")
    if not burstiness > 0:
        raise ValueError("the burstiness must be positive")
    if count < 1:
        raise ValueError("a schedule needs at least one request")
    rng = np.random.default_rng(seed)
    gaps_s = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=count - 1)
    # Rounded once from the running sum, so rounding errors do not pile up along the schedule.
    offsets_s = np.concatenate(([0.0], np.cumsum(gaps_s)))
    return [int(ns) for ns in np.rint(offsets_s * NS_PER_S)]


def output_lengths(*, count: int, low: int, high: int, seed: int) -> list[int]:
    """Each request's ``max_new_tokens``: uniform in ``[low, high]``, on a stream of its own."""
    if not 1 <= low <= high:
        raise ValueError("output lengths need 1 <= low <= high")
    if count < 1:
        raise ValueError("a schedule needs at least one request")
    rng = np.random.default_rng([seed, 1])
    return [int(n) for n in rng.integers(low, high, size=count, endpoint=True)]

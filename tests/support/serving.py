"""A hand-built ``metrics.serving`` block, for tests of what shows it (pages, the terminal)."""

from __future__ import annotations

from typing import Any


def summary(p99: float) -> dict[str, float]:
    return {"p50": p99 / 2, "p90": p99 * 0.8, "p99": p99, "mean": p99 / 2}


def serving_round(
    rate: float,
    attained: bool,
    attainment: float,
    goodput: float,
    *,
    ttft: float,
    e2e: float,
    lag_p99: float = 0.9,
) -> dict[str, Any]:
    """One offered rate's figures, as edc.harness.serving.rate_metrics names them."""
    return {
        "offered_rate": rate,
        "requests": 16,
        "duration_s": 16 / rate,
        "request_throughput": rate,
        "output_throughput": rate * 20,
        "ttft_ms": summary(ttft),
        "tpot_ms": summary(ttft / 10),
        "e2e_ms": summary(e2e),
        "goodput": goodput,
        "slo_attainment": attainment,
        "send_lag_ms": {"p50": lag_p99 / 4, "p99": lag_p99, "max": lag_p99 * 2},
        "attained": attained,
    }

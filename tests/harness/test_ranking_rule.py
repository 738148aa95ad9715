"""The rule every ranked figure keeps: holding tokens back or regrouping them into other chunks
never improves it. Checked over synthetic arrival traces, deterministically, not by a timed race.

A trace is the moment each token was ready inside the decoder. An emission is any way of sending
those tokens: consecutive groups (chunks), each sent at or after its last token was ready, in
order. Emitting each token the moment it is ready is the honest emission; no other may score
better on a rankable figure.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from edc.harness import metrics as m
from edc.harness.serving import Slo
from edc.tasks.task import RANKABLE_METRICS

MS = m.NS_PER_MS


@st.composite
def trace_and_emission(draw: st.DrawFn) -> tuple[list[m.RequestTiming], list[m.RequestTiming]]:
    honest: list[m.RequestTiming] = []
    reshaped: list[m.RequestTiming] = []
    for r in range(draw(st.integers(1, 6))):
        n = draw(st.integers(1, 24))
        sent = r * 1000 * MS
        gaps = draw(st.lists(st.integers(1, 5 * MS), min_size=n, max_size=n))
        ready = [sent + sum(gaps[: i + 1]) for i in range(n)]
        honest.append(m.RequestTiming(f"r{r}", sent, tuple(ready), (1,) * n))
        # Cut the tokens into chunks; each chunk leaves when its last token is ready, plus any
        # delay, and never before the previous chunk.
        cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=n - 1))) if n > 1 else []
        bounds = [0, *cuts, n]
        arrivals: list[int] = []
        for _a, b in itertools.pairwise(bounds):
            delay = draw(st.integers(0, 3 * MS))
            arrivals.append(max(ready[b - 1], arrivals[-1] if arrivals else 0) + delay)
        sizes = tuple(b - a for a, b in itertools.pairwise(bounds))
        reshaped.append(m.RequestTiming(f"r{r}", sent, tuple(arrivals), sizes))
    return honest, reshaped


def figures(timings: list[m.RequestTiming]) -> dict[str, float]:
    tokens = sum(t.tokens for t in timings)
    end = max(t.chunk_arrivals_ns[-1] for t in timings)
    start = min(t.sent_ns for t in timings)
    tree = {
        "latency": m.latency_metrics(timings),
        "throughput": {"output_tokens_per_s": m.output_tokens_per_s(tokens, start, end)},
    }
    return {name: m.lookup(tree, name) for name in RANKABLE_METRICS if name not in SERVING}


# The serving figure is a sweep's outcome, decided by each rate's share of requests meeting the
# SLO: it cannot improve if no request's verdict can.
SERVING = {"serving.max_rate_under_slo"}


@settings(max_examples=400, deadline=None)
@given(trace_and_emission())
def test_no_reshaping_or_delay_improves_a_rankable_figure(
    traces: tuple[list[m.RequestTiming], list[m.RequestTiming]],
) -> None:
    honest, reshaped = traces
    fair, gamed = figures(honest), figures(reshaped)
    for name, better in RANKABLE_METRICS.items():
        if name in SERVING:
            continue
        if better == "lower":
            assert gamed[name] >= fair[name] * (1 - 1e-12), name
        else:
            assert gamed[name] <= fair[name] * (1 + 1e-12), name


@settings(max_examples=400, deadline=None)
@given(
    trace_and_emission(),
    st.floats(0.5, 40.0),
    st.floats(0.1, 10.0),
)
def test_no_reshaping_or_delay_meets_an_slo_the_honest_decode_misses(
    traces: tuple[list[m.RequestTiming], list[m.RequestTiming]], ttft_ms: float, tpot_ms: float
) -> None:
    slo = Slo(ttft_ms=ttft_ms, tpot_ms=tpot_ms)
    honest, reshaped = traces
    for fair, gamed in zip(honest, reshaped, strict=True):
        assert slo.met(fair) or not slo.met(gamed)
    assert set(SERVING) <= set(RANKABLE_METRICS)


def test_the_figures_left_out_are_the_ones_a_burst_improves() -> None:
    # One request of 8 tokens ready 1 ms apart: honest, then held back and sent as one chunk.
    ready = tuple(i * MS for i in range(1, 9))
    honest = m.latency_metrics([m.RequestTiming("r", 0, ready, (1,) * 8)])
    burst = m.latency_metrics([m.RequestTiming("r", 0, (ready[-1],), (8,))])
    assert burst["tpot_ms"]["p50"] == 0.0 < honest["tpot_ms"]["p50"]
    assert burst["itl_ms"]["p99"] < honest["itl_ms"]["p99"]
    assert "latency.tpot_ms.p50" not in RANKABLE_METRICS
    assert "latency.itl_ms.p99" not in RANKABLE_METRICS
    assert burst["e2e_per_token_ms"]["p50"] == honest["e2e_per_token_ms"]["p50"]

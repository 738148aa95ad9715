import math

import numpy as np
import pytest

from edc.harness import metrics as m

MS = m.NS_PER_MS


def timing(
    sent_ms: float, arrivals_ms: list[float], sizes: list[int] | None = None
) -> m.RequestTiming:
    return m.RequestTiming(
        request_id="r",
        sent_ns=int(sent_ms * MS),
        chunk_arrivals_ns=tuple(int(a * MS) for a in arrivals_ms),
        chunk_sizes=tuple(sizes or [1] * len(arrivals_ms)),
    )


def test_summarize_gives_linear_percentiles_and_mean() -> None:
    values = [float(v) for v in range(1, 101)]
    s = m.summarize(values)
    assert s["p50"] == pytest.approx(50.5)
    assert s["p90"] == pytest.approx(90.1)
    assert s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5)


def test_summarize_refuses_nothing() -> None:
    with pytest.raises(ValueError):
        m.summarize([])


def test_tpot_is_e2e_minus_ttft_over_n_minus_one() -> None:
    # Sent at 0; first token at 100 ms, then 4 more at uneven gaps, last at 180 ms.
    t = timing(0, [100, 110, 150, 160, 180])
    assert t.ttft_ns == 100 * MS
    assert t.e2e_ns == 180 * MS
    assert t.tpot_ns == pytest.approx((180 - 100) / 4 * MS)


def test_tpot_is_undefined_for_one_token() -> None:
    assert timing(0, [5]).tpot_ns is None


def test_itl_spreads_a_chunk_over_its_tokens_and_sums_to_e2e_minus_ttft() -> None:
    # First chunk: 2 tokens at 10 ms; then 3 tokens at 40 ms; then 1 token at 45 ms.
    t = timing(0, [10, 40, 45], [2, 3, 1])
    itl_ms = [w / MS for w in t.itl_ns()]
    assert itl_ms == pytest.approx([0.0, 10.0, 10.0, 10.0, 5.0])
    assert len(itl_ms) == t.tokens - 1
    assert sum(itl_ms) == pytest.approx((t.e2e_ns - t.ttft_ns) / MS)


def test_latency_metrics_pool_requests_and_name_every_percentile() -> None:
    a = timing(0, [10, 20, 30])  # ttft 10, tpot 10
    b = timing(100, [130, 150, 170])  # ttft 30, tpot 20
    lat = m.latency_metrics([a, b])
    assert set(lat) == {"ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "e2e_per_token_ms"}
    for block in lat.values():
        assert set(block) == {"p50", "p90", "p99", "mean"}
    assert lat["ttft_ms"]["mean"] == pytest.approx(20.0)
    assert lat["tpot_ms"]["p50"] == pytest.approx(15.0)
    assert lat["e2e_ms"]["mean"] == pytest.approx((30 + 70) / 2)
    assert lat["itl_ms"]["mean"] == pytest.approx((10 + 10 + 20 + 20) / 4)
    assert lat["e2e_per_token_ms"]["p50"] == pytest.approx((30 / 3 + 70 / 3) / 2)


def test_itl_by_position_is_the_median_across_requests() -> None:
    a = timing(0, [10, 20, 40])  # itl 10, 20
    b = timing(0, [10, 14, 16])  # itl 4, 2
    c = timing(0, [10, 16, 30])  # itl 6, 14
    assert m.itl_by_position_ms([a, b, c]) == pytest.approx([6.0, 14.0])


def test_output_tokens_per_s() -> None:
    assert m.output_tokens_per_s(500, 0, 2 * m.NS_PER_S) == pytest.approx(250.0)
    with pytest.raises(ValueError):
        m.output_tokens_per_s(1, 5, 5)


def test_bootstrap_interval_contains_the_median_and_is_reproducible() -> None:
    rng = np.random.default_rng(3)
    values = list(rng.normal(10.0, 1.0, size=7))
    low, high = m.bootstrap_ci(values)
    assert low <= float(np.median(values)) <= high
    assert low < high
    assert (low, high) == m.bootstrap_ci(values)
    assert min(values) <= low and high <= max(values)


def test_bootstrap_of_one_value_is_that_value() -> None:
    assert m.bootstrap_ci([4.2]) == (4.2, 4.2)


def test_bootstrap_narrows_with_less_spread() -> None:
    wide = m.bootstrap_ci([8.0, 9.0, 10.0, 11.0, 12.0])
    narrow = m.bootstrap_ci([9.9, 9.95, 10.0, 10.05, 10.1])
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_roofline_floor_and_multiple() -> None:
    # 10 MB of weights at 20 GB/s: 0.5 ms per token at best.
    floor = m.tpot_floor_ms(10_000_000, 20.0)
    assert floor == pytest.approx(0.5)
    assert m.roofline(2.0, floor) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        m.tpot_floor_ms(1, 0.0)
    with pytest.raises(ValueError):
        m.roofline(1.0, math.inf)


def test_lookup_follows_dotted_names() -> None:
    tree = {"latency": {"tpot_ms": {"p50": 3.0}}, "flag": True}
    assert m.lookup(tree, "latency.tpot_ms.p50") == 3.0
    with pytest.raises(KeyError):
        m.lookup(tree, "latency.tpot_ms.p42")
    with pytest.raises(KeyError):
        m.lookup(tree, "flag")


def test_build_metrics_has_every_name_of_the_contract() -> None:
    repeats = [
        m.RepeatTiming(
            latency=(timing(0, [10, 12 + i, 14 + 2 * i]),),
            throughput_tokens=100,
            throughput_start_ns=0,
            throughput_end_ns=m.NS_PER_S,
        )
        for i in range(3)
    ]
    out = m.build_metrics(
        repeats=repeats,
        verdict=m.Verdict(
            tokens_checked=9, max_gap=0.01, exact_match_rate=1.0, first_divergence=None
        ),
        load_s=0.5,
        ranking_metric="latency.e2e_per_token_ms.p50",
        floor_ms=0.5,
        bandwidth_gb_per_s=20.0,
        plausibility_floor_ms=4.5,
        plausibility_margin=1.0,
    )
    for name in (
        "correct",
        "tokens_checked",
        "max_gap",
        "exact_match_rate",
        "latency",
        "throughput",
        "load_s",
        "score",
        "score_ci",
        "roofline",
    ):
        assert name in out
    assert out["correct"] is True
    assert out["throughput"]["output_tokens_per_s"] == pytest.approx(100.0)
    # Per-repeat E2E per token: 14/3, 16/3 and 18/3 ms; the score is their median.
    assert out["score_repeats"] == pytest.approx([14 / 3, 16 / 3, 18 / 3])
    assert out["score"] == pytest.approx(16 / 3)
    # The pooled median per-token time (16/3 ms) is above the floor: not flagged.
    assert out["plausibility"]["floor_ms"] == 4.5
    assert out["plausibility"]["implausible"] is False
    low, high = out["score_ci"]
    assert low <= out["score"] <= high
    assert out["roofline"] == pytest.approx(out["latency"]["tpot_ms"]["p50"] / 0.5)


def test_ranking_by_throughput_scores_each_repeat_with_a_real_interval() -> None:
    # Five repeats whose throughput scenarios took 1 s for different token counts.
    tokens = [100, 130, 90, 120, 110]
    repeats = [
        m.RepeatTiming(
            latency=(timing(0, [10, 20, 30]),),
            throughput_tokens=n,
            throughput_start_ns=5 * m.NS_PER_S,
            throughput_end_ns=6 * m.NS_PER_S,
        )
        for n in tokens
    ]
    out = m.build_metrics(
        repeats=repeats,
        verdict=m.Verdict(
            tokens_checked=15, max_gap=0.0, exact_match_rate=1.0, first_divergence=None
        ),
        load_s=0.1,
        ranking_metric="throughput.output_tokens_per_s",
        floor_ms=None,
        bandwidth_gb_per_s=None,
    )
    # One score per repeat, in the order run, each its own tokens per second.
    assert out["score_repeats"] == pytest.approx([100.0, 130.0, 90.0, 120.0, 110.0])
    assert out["score"] == pytest.approx(110.0)
    assert out["throughput"]["output_tokens_per_s"] == pytest.approx(110.0)
    # Not a one-point interval: the repeats differ, and so do the interval's ends.
    low, high = out["score_ci"]
    assert 90.0 <= low < out["score"] < high <= 130.0
    assert (low, high) == m.bootstrap_ci([100.0, 130.0, 90.0, 120.0, 110.0])

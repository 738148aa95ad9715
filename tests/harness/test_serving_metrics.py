from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edc.harness.metrics import NS_PER_MS, RequestTiming
from edc.harness.serving import (
    RateSweep,
    ServedRequest,
    Slo,
    SweepPoint,
    attained,
    rate_metrics,
)

MS = NS_PER_MS
SLO = Slo(ttft_ms=100.0, tpot_ms=10.0)
T0 = 1_000  # ms on the harness clock at which the schedule starts


def served(
    scheduled_ms: float, sent_ms: float, arrivals_ms: list[float], sizes: list[int]
) -> ServedRequest:
    return ServedRequest(
        scheduled_ns=int(scheduled_ms * MS),
        timing=RequestTiming(
            request_id=f"r{scheduled_ms}",
            sent_ns=int(sent_ms * MS),
            chunk_arrivals_ns=tuple(int(a * MS) for a in arrivals_ms),
            chunk_sizes=tuple(sizes),
        ),
    )


def per_token_decoder(d_ns: int, tokens: int, *, held_back: bool = False) -> RequestTiming:
    """Sent at 0; sleeps d per token and sends each token alone, or all N at once at N·d."""
    if held_back:
        return RequestTiming("held", 0, (tokens * d_ns,), (tokens,))
    return RequestTiming("honest", 0, tuple(d_ns * (i + 1) for i in range(tokens)), (1,) * tokens)


# ---- the SLO ------------------------------------------------------------------------------------


def test_e2e_bound_grows_by_tpot_per_token_after_the_first() -> None:
    assert SLO.e2e_bound_ms(1) == 100.0
    assert SLO.e2e_bound_ms(5) == 140.0


@pytest.mark.parametrize(("ttft", "tpot"), [(0.0, 10.0), (100.0, 0.0), (-1.0, 10.0)])
def test_an_slo_needs_positive_bounds(ttft: float, tpot: float) -> None:
    with pytest.raises(ValueError):
        Slo(ttft_ms=ttft, tpot_ms=tpot)


@pytest.mark.parametrize(
    ("slo", "tokens", "boundary_ns"),
    [
        # E2E binds: 4·d <= 50 + 3·20 = 110 ms, so d <= 27.5 ms (TTFT allows 50).
        (Slo(ttft_ms=50.0, tpot_ms=20.0), 4, 27_500_000),
        # TTFT binds: d <= 30 ms (E2E allows 4·d <= 30 + 3·50 = 180, d <= 45).
        (Slo(ttft_ms=30.0, tpot_ms=50.0), 4, 30_000_000),
        # One token: E2E = TTFT = d, both bounded by ttft.
        (Slo(ttft_ms=30.0, tpot_ms=50.0), 1, 30_000_000),
    ],
)
def test_a_steady_decoder_meets_the_slo_exactly_up_to_the_boundary(
    slo: Slo, tokens: int, boundary_ns: int
) -> None:
    assert slo.met(per_token_decoder(boundary_ns, tokens))
    assert not slo.met(per_token_decoder(boundary_ns + 1, tokens))
    for d_ms in np.linspace(1.0, 60.0, 119):
        d_ns = int(d_ms * MS)
        expected = d_ns <= slo.ttft_ms * MS and tokens * d_ns <= slo.e2e_bound_ms(tokens) * MS
        assert slo.met(per_token_decoder(d_ns, tokens)) == expected


def test_holding_tokens_back_zeroes_tpot_but_misses_the_ttft_bound() -> None:
    # N = 5 tokens, d = 40 ms. Honest: TTFT 40 <= 100, E2E 200 <= 100 + 4·30 = 220: met.
    # Held back: all 5 at 200 ms, so TTFT = 200 > 100: missed, although its TPOT is 0.
    slo = Slo(ttft_ms=100.0, tpot_ms=30.0)
    honest = per_token_decoder(40 * MS, 5)
    held = per_token_decoder(40 * MS, 5, held_back=True)
    assert held.tpot_ns == 0
    assert held.e2e_ns == honest.e2e_ns
    assert slo.met(honest)
    assert not slo.met(held)


@pytest.mark.parametrize("tokens", [1, 2, 5, 17])
def test_holding_tokens_back_never_earns_a_better_verdict(tokens: int) -> None:
    for ttft in (5.0, 20.0, 50.0, 100.0, 400.0):
        for tpot in (1.0, 5.0, 20.0, 80.0):
            slo = Slo(ttft_ms=ttft, tpot_ms=tpot)
            for d_ms in (1, 3, 10, 25, 60):
                honest = per_token_decoder(d_ms * MS, tokens)
                held = per_token_decoder(d_ms * MS, tokens, held_back=True)
                assert not (slo.met(held) and not slo.met(honest))


# ---- one offered rate ---------------------------------------------------------------------------


def four_requests() -> list[ServedRequest]:
    """Scheduled 100 ms apart from T0; SLO 100 ms TTFT + 10 ms per later token."""
    return [
        # lag 3; TTFT 50, E2E 90 <= 100 + 4·10: met. TPOT (90 − 50)/4 = 10.
        served(T0, T0 + 3, [T0 + 53, T0 + 63, T0 + 73, T0 + 83, T0 + 93], [1, 1, 1, 1, 1]),
        # lag 1; TTFT 150 > 100: missed (E2E 190 <= 100 + 10·10 holds). TPOT (190 − 150)/10 = 4.
        served(T0 + 100, T0 + 101, [T0 + 251, T0 + 291], [1, 10]),
        # lag 2; TTFT 80 holds, E2E 160 > 100 + 3·10: missed. TPOT (160 − 80)/3.
        served(T0 + 200, T0 + 202, [T0 + 282, T0 + 362], [1, 3]),
        # lag 0; one token at TTFT = E2E = 100, exactly the bound: met. No TPOT.
        served(T0 + 300, T0 + 300, [T0 + 400], [1]),
    ]


def test_rate_metrics_of_a_hand_built_trace() -> None:
    m = rate_metrics(10.0, four_requests(), SLO)
    assert set(m) == {
        "offered_rate",
        "requests",
        "duration_s",
        "request_throughput",
        "output_throughput",
        "ttft_ms",
        "tpot_ms",
        "e2e_ms",
        "goodput",
        "slo_attainment",
        "send_lag_ms",
    }
    assert m["offered_rate"] == 10.0
    assert m["requests"] == 4
    # From the first scheduled send (T0, not the actual send at T0 + 3) to the last arrival.
    assert m["duration_s"] == pytest.approx(0.4)
    assert m["request_throughput"] == pytest.approx(4 / 0.4)
    assert m["output_throughput"] == pytest.approx((5 + 11 + 4 + 1) / 0.4)
    assert m["goodput"] == pytest.approx(2 / 0.4)
    assert m["slo_attainment"] == 0.5
    # TTFT 50, 150, 80, 100 → sorted 50, 80, 100, 150 (linear percentiles).
    assert m["ttft_ms"] == pytest.approx({"p50": 90.0, "p90": 135.0, "p99": 148.5, "mean": 95.0})
    # E2E 90, 190, 160, 100 → sorted 90, 100, 160, 190.
    assert m["e2e_ms"] == pytest.approx({"p50": 130.0, "p90": 181.0, "p99": 189.1, "mean": 135.0})
    # TPOT 10, 4, 80/3 (the one-token request has none) → sorted 4, 10, 26.67.
    assert m["tpot_ms"] == pytest.approx(
        {
            "p50": 10.0,
            "p90": 10 + 0.8 * 50 / 3,
            "p99": 10 + 0.98 * 50 / 3,
            "mean": (10 + 4 + 80 / 3) / 3,
        }
    )
    # Lags 3, 1, 2, 0 ms → sorted 0, 1, 2, 3.
    assert m["send_lag_ms"] == pytest.approx({"p50": 1.5, "p99": 2.97, "max": 3.0})


def test_one_token_requests_report_a_zero_tpot() -> None:
    m = rate_metrics(1.0, [served(0, 0, [20], [1]), served(10, 10, [40], [1])], SLO)
    assert m["tpot_ms"] == {"p50": 0.0, "p90": 0.0, "p99": 0.0, "mean": 0.0}


def test_send_lag_is_reported_as_is() -> None:
    assert served(50, 48, [60], [1]).send_lag_ns == -2 * MS


def test_rate_metrics_refuses_nothing_and_an_empty_window() -> None:
    with pytest.raises(ValueError):
        rate_metrics(1.0, [], SLO)
    with pytest.raises(ValueError):
        rate_metrics(1.0, [served(10, 0, [10], [1])], SLO)


def test_attained_compares_the_share_to_the_target() -> None:
    m = rate_metrics(10.0, four_requests(), SLO)
    assert attained(m, 0.5)
    assert not attained(m, 0.9)


# ---- the sweep ----------------------------------------------------------------------------------


def drive(sweep: RateSweep, holds: Callable[[float], bool], limit: int = 10_000) -> int:
    """Measure until the sweep is over; the number of measurements taken."""
    for taken in range(limit):
        rate = sweep.next_rate()
        if rate is None:
            return taken
        sweep.record(rate, holds(rate))
    raise AssertionError("the sweep never ended")


def step(capacity: float) -> Callable[[float], bool]:
    return lambda rate: rate <= capacity


@pytest.mark.parametrize("refine_steps", range(7))
def test_the_bracket_holds_the_capacity_and_halves_per_refine_step(refine_steps: int) -> None:
    sweep = RateSweep([1.0, 2.0, 4.0, 8.0, 16.0], refine_steps=refine_steps, confirm=2)
    taken = drive(sweep, step(5.3))
    best, (low, high) = sweep.result()
    assert best == low
    assert low <= 5.3 < high
    assert high - low == pytest.approx(4.0 / 2**refine_steps)
    assert taken == 4 + refine_steps + 2
    assert sweep.points[:4] == tuple(
        SweepPoint(r, ok) for r, ok in [(1.0, True), (2.0, True), (4.0, True), (8.0, False)]
    )


def test_every_rate_passing_gives_the_top_rate_and_no_bisection() -> None:
    sweep = RateSweep([1.0, 2.0, 4.0], refine_steps=5, confirm=2)
    drive(sweep, step(100.0))
    assert sweep.result() == (4.0, (4.0, 4.0))
    assert [p.rate for p in sweep.points] == [1.0, 2.0, 4.0, 4.0, 4.0]


def test_the_first_rate_failing_bisects_below_it() -> None:
    sweep = RateSweep([2.0, 4.0, 8.0], refine_steps=3, confirm=2)
    drive(sweep, step(0.7))
    assert [p.rate for p in sweep.points] == [2.0, 1.0, 0.5, 0.75, 0.5, 0.5]
    assert sweep.result() == (0.5, (0.5, 0.75))


def test_nothing_holding_gives_zero_and_no_confirmation() -> None:
    sweep = RateSweep([2.0, 4.0], refine_steps=3, confirm=2)
    drive(sweep, step(0.1))
    assert [p.rate for p in sweep.points] == [2.0, 1.0, 0.5, 0.25]
    assert sweep.result() == (0.0, (0.0, 0.25))


def test_a_flaky_confirmation_moves_the_candidate_down() -> None:
    seen: dict[float, int] = {}

    def holds(rate: float) -> bool:
        # Holds up to 5, except that the second measurement at 5 misses.
        seen[rate] = seen.get(rate, 0) + 1
        return rate <= 5.0 and not (rate == 5.0 and seen[rate] == 2)

    sweep = RateSweep([1.0, 2.0, 4.0, 8.0], refine_steps=2, confirm=2)
    drive(sweep, holds)
    assert [p.rate for p in sweep.points] == [1.0, 2.0, 4.0, 8.0, 6.0, 5.0, 5.0, 4.0, 4.0]
    assert sweep.result() == (4.0, (4.0, 5.0))


def test_zero_confirmations_end_after_the_bisection() -> None:
    sweep = RateSweep([1.0, 2.0], refine_steps=1, confirm=0)
    drive(sweep, step(1.2))
    assert [p.rate for p in sweep.points] == [1.0, 2.0, 1.5]
    assert sweep.result() == (1.0, (1.0, 1.5))


def test_the_sweep_takes_only_the_rate_it_asked_for() -> None:
    sweep = RateSweep([1.0, 2.0], refine_steps=0, confirm=0)
    assert sweep.next_rate() == sweep.next_rate() == 1.0
    with pytest.raises(ValueError):
        sweep.record(2.0, True)
    drive(sweep, step(10.0))
    assert sweep.next_rate() is None
    with pytest.raises(ValueError):
        sweep.record(2.0, True)


@pytest.mark.parametrize(
    ("rates", "refine_steps", "confirm"),
    [([], 1, 1), ([0.0, 1.0], 1, 1), ([2.0, 1.0], 1, 1), ([1.0, 1.0], 1, 1), ([1.0], -1, 1)],
)
def test_bad_sweeps_are_refused(rates: list[float], refine_steps: int, confirm: int) -> None:
    with pytest.raises(ValueError):
        RateSweep(rates, refine_steps=refine_steps, confirm=confirm)


ascending_rates = st.lists(
    st.floats(min_value=0.1, max_value=1_000.0), min_size=1, max_size=8, unique=True
).map(sorted)


@settings(max_examples=300, deadline=None)
@given(
    rates=ascending_rates,
    capacity=st.floats(min_value=0.01, max_value=2_000.0),
    refine_steps=st.integers(0, 8),
    confirm=st.integers(0, 3),
)
def test_a_step_capacity_is_always_bracketed(
    rates: list[float], capacity: float, refine_steps: int, confirm: int
) -> None:
    sweep = RateSweep(rates, refine_steps=refine_steps, confirm=confirm)
    taken = drive(sweep, step(capacity))
    assert taken <= len(rates) + refine_steps + confirm
    best, (low, high) = sweep.result()
    assert best == low <= capacity
    first_miss = next((i for i, r in enumerate(rates) if r > capacity), None)
    if first_miss is None:
        assert (low, high) == (rates[-1], rates[-1])
    else:
        assert capacity < high
        start_low = rates[first_miss - 1] if first_miss else 0.0
        assert high - low == pytest.approx((rates[first_miss] - start_low) / 2**refine_steps)


@settings(max_examples=300, deadline=None)
@given(
    rates=ascending_rates,
    refine_steps=st.integers(0, 8),
    confirm=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
    share=st.floats(min_value=0.0, max_value=1.0),
)
def test_a_random_system_always_ends_with_a_consistent_result(
    rates: list[float], refine_steps: int, confirm: int, seed: int, share: float
) -> None:
    rng = np.random.default_rng(seed)
    sweep = RateSweep(rates, refine_steps=refine_steps, confirm=confirm)
    taken = drive(sweep, lambda _rate: bool(rng.random() < share))
    assert taken <= (len(rates) + refine_steps) * (1 + confirm)
    best, (low, high) = sweep.result()
    assert best == low
    at_best = [p.attained for p in sweep.points if p.rate == best]
    assert all(at_best) and (best == 0.0) == (not at_best)
    above = {p.rate for p in sweep.points if p.rate > best}
    assert all(any(not p.attained for p in sweep.points if p.rate == r) for r in above)
    assert high == min(above, default=best)


# ---- the sweep's time budget --------------------------------------------------------------------


def test_a_spent_budget_during_the_ascent_confirms_the_best_rate_so_far() -> None:
    sweep = RateSweep([1.0, 2.0, 4.0, 8.0], refine_steps=3, confirm=2)
    for rate in (1.0, 2.0):
        assert sweep.next_rate() == rate
        sweep.record(rate, True)
    assert sweep.stop_searching()
    # 4 and 8 are never tried, no bisection: 2 is confirmed twice and is the result.
    drive(sweep, step(100.0))
    assert [p.rate for p in sweep.points] == [1.0, 2.0, 2.0, 2.0]
    assert sweep.result() == (2.0, (2.0, 2.0))


def test_a_spent_budget_during_the_bisection_keeps_the_bracket_measured() -> None:
    sweep = RateSweep([2.0, 4.0], refine_steps=5, confirm=1)
    for rate, held in ((2.0, True), (4.0, False), (3.0, True)):
        assert sweep.next_rate() == rate
        sweep.record(rate, held)
    assert sweep.stop_searching()
    drive(sweep, step(3.2))
    assert [p.rate for p in sweep.points] == [2.0, 4.0, 3.0, 3.0]
    assert sweep.result() == (3.0, (3.0, 4.0))


def test_a_miss_while_confirming_after_the_budget_still_moves_the_candidate_down() -> None:
    sweep = RateSweep([1.0, 2.0, 4.0], refine_steps=2, confirm=1)
    sweep.record(1.0, True)
    sweep.record(2.0, True)
    assert sweep.stop_searching()
    sweep.record(2.0, False)  # the confirmation of 2 misses: 1 is confirmed instead
    assert sweep.next_rate() == 1.0
    assert not sweep.stop_searching()  # already confirming: nothing to cut
    sweep.record(1.0, True)
    assert sweep.next_rate() is None
    assert sweep.result() == (1.0, (1.0, 2.0))


def test_a_budget_spent_with_nothing_held_or_the_sweep_over_ends_it() -> None:
    sweep = RateSweep([2.0, 4.0], refine_steps=3, confirm=2)
    sweep.record(2.0, False)
    assert sweep.stop_searching()
    assert sweep.next_rate() is None
    assert sweep.result() == (0.0, (0.0, 2.0))
    assert not sweep.stop_searching()

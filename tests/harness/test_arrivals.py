import math
from itertools import pairwise
from typing import Any

import numpy as np
import pytest

from edc.harness.arrivals import arrival_offsets_ns, output_lengths
from edc.harness.metrics import NS_PER_S

RATE = 8.0
COUNT = 20_000


def gaps_s(burstiness: float, seed: int = 7) -> np.ndarray[Any, np.dtype[np.float64]]:
    offsets = arrival_offsets_ns(rate=RATE, count=COUNT, burstiness=burstiness, seed=seed)
    return np.diff(np.asarray(offsets, dtype=np.float64)) / NS_PER_S


def ks_statistic_exponential(gaps: np.ndarray[Any, np.dtype[np.float64]], rate: float) -> float:
    """Largest distance between the gaps' empirical CDF and 1 − exp(−rate·x)."""
    xs = np.sort(gaps)
    n = len(xs)
    cdf = 1.0 - np.exp(-rate * xs)
    above = np.arange(1, n + 1) / n - cdf
    below = cdf - np.arange(0, n) / n
    return float(max(above.max(), below.max()))


def test_schedule_starts_at_zero_and_never_goes_back() -> None:
    offsets = arrival_offsets_ns(rate=RATE, count=100, burstiness=1.0, seed=1)
    assert len(offsets) == 100
    assert offsets[0] == 0
    assert all(b >= a for a, b in pairwise(offsets))
    assert arrival_offsets_ns(rate=RATE, count=1, burstiness=1.0, seed=1) == [0]


@pytest.mark.parametrize("burstiness", [1.0, 0.25, 4.0])
def test_gaps_have_mean_one_over_rate_and_cv_one_over_root_burstiness(burstiness: float) -> None:
    gaps = gaps_s(burstiness)
    assert gaps.mean() == pytest.approx(1.0 / RATE, rel=0.04)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0 / math.sqrt(burstiness), rel=0.05)


def test_burstiness_one_is_a_poisson_process() -> None:
    gaps = gaps_s(1.0)
    assert ks_statistic_exponential(gaps, RATE) < 1.63 / math.sqrt(len(gaps))


def test_bursty_gaps_are_not_exponential() -> None:
    # The same check has the power to tell a burstier process apart.
    gaps = gaps_s(0.25)
    assert ks_statistic_exponential(gaps, RATE) > 1.63 / math.sqrt(len(gaps))


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    def draw(seed: int) -> list[int]:
        return arrival_offsets_ns(rate=RATE, count=50, burstiness=0.5, seed=seed)

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_lengths_stay_in_bounds_and_reach_both_ends() -> None:
    lengths = output_lengths(count=2_000, low=4, high=9, seed=11)
    assert len(lengths) == 2_000
    assert min(lengths) == 4
    assert max(lengths) == 9
    assert lengths == output_lengths(count=2_000, low=4, high=9, seed=11)
    assert lengths != output_lengths(count=2_000, low=4, high=9, seed=12)


def test_equal_bounds_give_a_constant_length() -> None:
    assert output_lengths(count=5, low=16, high=16, seed=0) == [16] * 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0.0, "count": 10, "burstiness": 1.0},
        {"rate": -1.0, "count": 10, "burstiness": 1.0},
        {"rate": math.nan, "count": 10, "burstiness": 1.0},
        {"rate": 1.0, "count": 10, "burstiness": 0.0},
        {"rate": 1.0, "count": 0, "burstiness": 1.0},
    ],
)
def test_bad_schedules_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        arrival_offsets_ns(seed=0, **kwargs)


@pytest.mark.parametrize(("count", "low", "high"), [(10, 0, 5), (10, 6, 5), (10, -2, 3), (0, 1, 5)])
def test_bad_lengths_are_refused(count: int, low: int, high: int) -> None:
    with pytest.raises(ValueError):
        output_lengths(count=count, low=low, high=high, seed=0)

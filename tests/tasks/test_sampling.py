import math

import numpy as np
import pytest

from edc.tasks.sampling import (
    MASK64,
    SamplingRule,
    fnv1a64,
    greedy,
    gumbel_noise,
    request_key,
    splitmix64,
)


def test_splitmix64_matches_the_published_sequence() -> None:
    # The first outputs of Vigna's splitmix64 generator seeded with 0.
    assert splitmix64(0) == 0xE220A8397B1DCDAF
    assert splitmix64(0x9E3779B97F4A7C15) == 0x6E789E6AA1B965F4


def test_fnv1a64_matches_the_published_vectors() -> None:
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8


def _noise_by_the_letter(seed: int, request_id: str, step: int, token: int) -> float:
    """The documented formula with plain integers and math.log, as a participant would write it."""
    key = splitmix64(seed ^ fnv1a64(request_id.encode()))
    step_key = splitmix64(key ^ step)
    bits = splitmix64(step_key ^ token)
    u = ((bits >> 12) + 0.5) * 2.0**-52
    return -math.log(-math.log(u))


def test_vectorised_noise_equals_the_documented_integer_formula() -> None:
    seed, rid = 20261128, "pub-007"
    noise = gumbel_noise(request_key(seed, rid), [0, 1, 63], 256)
    assert noise.shape == (3, 256)
    for row, step in enumerate([0, 1, 63]):
        for token in (0, 1, 97, 255):
            assert noise[row, token] == pytest.approx(
                _noise_by_the_letter(seed, rid, step, token), abs=1e-12
            )


def test_noise_is_finite_at_the_extreme_hash_values() -> None:
    for bits in (0, MASK64):
        u = ((bits >> 12) + 0.5) * 2.0**-52
        assert 0.0 < u < 1.0
        assert math.isfinite(-math.log(-math.log(u)))


def test_noise_depends_on_request_step_and_token_only() -> None:
    rule = SamplingRule(kind="gumbel", temperature=0.8, seed=1)
    a = rule.scores(np.zeros(256), rule.request_key("a"), 0)
    assert np.array_equal(a, rule.scores(np.zeros(256), rule.request_key("a"), 0))
    assert not np.array_equal(a, rule.scores(np.zeros(256), rule.request_key("b"), 0))
    assert not np.array_equal(a, rule.scores(np.zeros(256), rule.request_key("a"), 1))
    other_seed = SamplingRule(kind="gumbel", temperature=0.8, seed=2)
    assert not np.array_equal(a, other_seed.scores(np.zeros(256), other_seed.request_key("a"), 0))


def test_scores_for_many_steps_equal_scores_one_step_at_a_time() -> None:
    rule = SamplingRule(kind="gumbel", temperature=0.7, seed=9)
    key = rule.request_key("r")
    logits = np.random.default_rng(0).normal(size=(5, 256)).astype(np.float32)
    rows = rule.scores(logits, key, np.arange(5))
    for i in range(5):
        assert np.array_equal(rows[i], rule.scores(logits[i], key, i))
    expected = logits[2].astype(np.float64) / 0.7 + gumbel_noise(key, [2], 256)[0]
    assert np.array_equal(rows[2], expected)


def test_greedy_is_the_argmax_and_ties_go_to_the_lowest_id() -> None:
    assert greedy().choose(np.array([0.1, 3.0, -1.0, 3.0]), step=5) == 1
    assert np.array_equal(greedy().scores(np.array([1.0, 2.0]), 0), [1.0, 2.0])


def test_gumbel_max_samples_the_softmax_distribution() -> None:
    # Deterministic noise, so this is an exact regression check, not a flaky statistical one.
    logits = np.array([0.0, 1.0, 2.0, -1.0])
    temperature = 0.8
    rule = SamplingRule(kind="gumbel", temperature=temperature, seed=42)
    draws = [rule.for_request(f"r{i}").choose(logits, 0) for i in range(4000)]
    freq = np.bincount(draws, minlength=4) / len(draws)
    probs = np.exp(logits / temperature) / np.exp(logits / temperature).sum()
    assert np.abs(freq - probs).max() < 0.03


def test_rule_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError, match="temperature"):
        SamplingRule(kind="gumbel", temperature=0.0)
    with pytest.raises(ValueError, match="seed"):
        SamplingRule(kind="gumbel", seed=-1)
    with pytest.raises(ValueError, match="unknown"):
        SamplingRule(kind="nucleus")  # type: ignore[arg-type]


def test_request_fields_carry_the_noise_key() -> None:
    rule = SamplingRule(kind="gumbel", temperature=0.8, seed=7)
    fields = rule.request_fields("pub-001")
    assert fields == {
        "rule": "gumbel",
        "temperature": 0.8,
        "seed": 7,
        "key": rule.request_key("pub-001"),
    }
    assert 0 <= fields["key"] < 2**64
    assert SamplingRule(kind="greedy").request_fields("x") == {"rule": "greedy"}

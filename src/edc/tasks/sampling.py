"""Sampling rules: greedy and the deterministic hashed Gumbel-max rule; used to decode and verify.

Usage::

    rule = SamplingRule(kind="gumbel", temperature=0.8, seed=20261128)
    sampler = rule.for_request("pub-003")          # binds the request's noise key
    token = sampler.choose(logits, step=0)         # logits: float array of shape (vocab,)
    scores = sampler.scores(logits_rows, steps)    # (n, vocab) float64, what verification compares

A token is correct at a step when ``scores.max() - scores[token] <= epsilon`` (the task's ε).

The hashed Gumbel-max rule, exactly (all integers are unsigned 64-bit, arithmetic modulo 2**64,
``^`` is XOR, ``>>`` a logical shift)::

    splitmix64(x):
        z = x + 0x9E3779B97F4A7C15
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB
        return z ^ (z >> 31)

    fnv1a64(bytes):                        # the request id's UTF-8 bytes
        h = 0xCBF29CE484222325
        for b in bytes: h = (h ^ b) * 0x100000001B3
        return h

    request_key = splitmix64(seed ^ fnv1a64(utf8(request_id)))
    step_key    = splitmix64(request_key ^ step)   # step: 0 for the first generated token, 1, ...
    bits        = splitmix64(step_key ^ token)     # token: 0 .. vocab_size-1
    u           = ((bits >> 12) + 0.5) * 2**-52    # float64, exact, strictly inside (0, 1)
    g           = -log(-log(u))                    # float64 natural logs
    score       = float64(logit) / T + g
    token       = argmax(score)                    # ties: the lowest token id

The harness sends ``request_key`` with every request (``RequestSampler.key`` here; the JSON field
``key`` of ``request_fields``), so a submission may start from ``step_key``.
Greedy: ``score = float64(logit)``, same argmax. The noise depends only on the request key, the
step and the token, never on the model, so a speculative decoder can compute it for any draft.
``log`` may differ in the last bit between languages; ε absorbs that and float32 arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

SamplingKind = Literal["greedy", "gumbel"]

MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


def splitmix64(x: int) -> int:
    z = (x + _GAMMA) & MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & MASK64
    return z ^ (z >> 31)


def fnv1a64(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & MASK64
    return h


def _splitmix64_array(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    # numpy array arithmetic on uint64 wraps modulo 2**64 silently, which is what the rule wants.
    z = x + np.uint64(_GAMMA)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
    return z ^ (z >> np.uint64(31))


def request_key(seed: int, request_id: str) -> int:
    return splitmix64((seed & MASK64) ^ fnv1a64(request_id.encode("utf-8")))


def gumbel_noise(key: int, steps: ArrayLike, vocab_size: int) -> NDArray[np.float64]:
    """Noise g for every (step, token): shape ``(len(steps), vocab_size)``, float64."""
    step_arr = np.atleast_1d(np.asarray(steps, dtype=np.uint64))
    step_keys = _splitmix64_array(np.uint64(key) ^ step_arr)
    tokens = np.arange(vocab_size, dtype=np.uint64)
    bits = _splitmix64_array(step_keys[:, None] ^ tokens[None, :])
    u = ((bits >> np.uint64(12)).astype(np.float64) + 0.5) * 2.0**-52
    noise: NDArray[np.float64] = -np.log(-np.log(u))
    return noise


@dataclass(frozen=True)
class SamplingRule:
    """A task's rule. ``temperature`` and ``seed`` only matter for ``gumbel``."""

    kind: SamplingKind = "greedy"
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("greedy", "gumbel"):
            raise ValueError(f"unknown sampling rule {self.kind!r}; use 'greedy' or 'gumbel'")
        if not self.temperature > 0:
            raise ValueError("the sampling temperature must be positive")
        if not 0 <= self.seed <= MASK64:
            raise ValueError("the sampling seed must fit in an unsigned 64-bit integer")

    def request_key(self, request_id: str) -> int:
        return request_key(self.seed, request_id)

    def for_request(self, request_id: str) -> RequestSampler:
        return RequestSampler(rule=self, key=self.request_key(request_id))

    def describe(self) -> dict[str, Any]:
        """The rule as JSON fields (for the ``load`` message and documentation)."""
        if self.kind == "greedy":
            return {"rule": "greedy"}
        return {"rule": "gumbel", "temperature": self.temperature, "seed": self.seed}

    def request_fields(self, request_id: str) -> dict[str, Any]:
        """What a ``generate`` message carries: the rule plus the request's 64-bit noise ``key``,
        so a submission never needs to hash request ids itself."""
        fields = self.describe()
        if self.kind == "gumbel":
            fields["key"] = self.request_key(request_id)
        return fields

    def scores(self, logits: ArrayLike, key: int, steps: ArrayLike) -> NDArray[np.float64]:
        """Scores for logits of shape ``(vocab,)`` at one step or ``(n, vocab)`` at ``n`` steps."""
        values = np.asarray(logits, dtype=np.float64)
        if self.kind == "greedy":
            return values
        rows = np.atleast_2d(values)
        out = rows / self.temperature + gumbel_noise(key, steps, rows.shape[-1])
        return out.reshape(values.shape)


@dataclass(frozen=True)
class RequestSampler:
    """A rule bound to one request's noise key: what a decoder calls at every step."""

    rule: SamplingRule
    key: int

    def scores(self, logits: ArrayLike, steps: ArrayLike) -> NDArray[np.float64]:
        return self.rule.scores(logits, self.key, steps)

    def choose(self, logits: ArrayLike, step: int) -> int:
        return int(np.argmax(self.scores(logits, step)))


def greedy() -> RequestSampler:
    """A greedy sampler (needs no request key)."""
    return RequestSampler(rule=SamplingRule(kind="greedy"), key=0)

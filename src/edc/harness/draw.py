"""Each evaluation's secret: its sampling seed, its opaque request ids and its draw of prompts.

Nothing a submission can know before a request arrives lets it precompute that request's answer:

- the secret is 32 bytes from the operating system's CSPRNG, fresh for every evaluation (public
  check, hidden run, ``edc eval`` alike), and reaches nobody but the harness;
- the sampling seed derived from it is sent only inside each ``generate`` (never with ``load``),
  so answers cannot be computed during the untimed load;
- request ids are derived from it too: opaque, unrelated to the prompt or the plan's order;
- so is the serving scenario's schedule (arrival times, output lengths);
- the prompts are drawn with it from the pool (the hidden pool lives in the database).

The secret is stored with the result for organisers (``submissions.audit``): with the same pool it
replays the evaluation exactly (the same prompts, ids and noise).

::

    secret = EvaluationSecret.fresh()
    drawn = draw_prompts(pool, needed=56, secret=secret)   # in plan order
    secret.sampling_seed(), secret.request_id(0)
"""

from __future__ import annotations

import hashlib
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from edc.tasks.task import Prompt

SECRET_BYTES = 32


@dataclass(frozen=True)
class EvaluationSecret:
    value: bytes

    def __post_init__(self) -> None:
        if len(self.value) != SECRET_BYTES:
            raise ValueError(f"an evaluation secret is {SECRET_BYTES} bytes")

    @classmethod
    def fresh(cls) -> EvaluationSecret:
        return cls(secrets.token_bytes(SECRET_BYTES))

    @classmethod
    def from_hex(cls, text: str) -> EvaluationSecret:
        return cls(bytes.fromhex(text))

    def hex(self) -> str:
        return self.value.hex()

    def _derive(self, purpose: bytes, index: int = 0, size: int = 8) -> bytes:
        # One keyed hash per purpose: knowing a request id or the seed says nothing of the rest.
        return hashlib.blake2b(
            index.to_bytes(8, "little"), key=self.value, person=purpose, digest_size=size
        ).digest()

    def sampling_seed(self) -> int:
        """The sampling rule's 64-bit seed for this evaluation."""
        return int.from_bytes(self._derive(b"edc-seed"), "little")

    def schedule_seed(self) -> int:
        """The seed of the serving scenario's arrival times and output lengths: a submission
        cannot know when the next request comes, nor how long it will be."""
        return int.from_bytes(self._derive(b"edc-schedule"), "little") >> 1  # numpy: < 2**63

    def request_id(self, index: int) -> str:
        """The opaque id of the plan's ``index``-th request."""
        return self._derive(b"edc-request-id", index).hex()

    def rng(self) -> random.Random:
        return random.Random(int.from_bytes(self._derive(b"edc-draw", size=32), "little"))


def draw_prompts(
    pool: Sequence[Prompt],
    *,
    needed: int,
    secret: EvaluationSecret,
    groups: Sequence[int] | None = None,
) -> list[Prompt]:
    """``needed`` prompts from ``pool`` in a secret order, each at most once.

    With a pool large enough, each group (``groups`` splits ``needed``: the warm-up, each timed
    repeat, the throughput set) is a stratified sample by prompt length: the pool sorted by
    length is cut into as many strata as the group has prompts and one is drawn from each. Every
    evaluation then sees the same mix of short and long prompts, so the prompt draw adds little
    to the run-to-run noise while the prompts themselves stay unknowable. A pool smaller than the
    plan (like a public prompt file) is gone through again in a secret order.
    """
    if not pool:
        raise ValueError("the prompt pool is empty")
    rng = secret.rng()
    if len(pool) < needed:
        drawn: list[Prompt] = []
        while len(drawn) < needed:
            drawn.extend(rng.sample(list(pool), min(len(pool), needed - len(drawn))))
        return drawn
    sizes = list(groups) if groups is not None else [needed]
    if sum(sizes) != needed:
        raise ValueError(f"the groups {sizes} do not add up to {needed} prompts")
    by_length = sorted(pool, key=lambda p: (len(p.tokens), p.id))
    taken: set[int] = set()
    drawn = []
    for size in sizes:
        group = []
        for k in range(size):
            low, high = k * len(by_length) // size, (k + 1) * len(by_length) // size
            free = [i for i in range(low, high) if i not in taken]
            if not free:  # this stratum is used up by earlier groups: any free prompt will do
                free = [i for i in range(len(by_length)) if i not in taken]
            pick = rng.choice(free)
            taken.add(pick)
            group.append(by_length[pick])
        rng.shuffle(group)
        drawn.extend(group)
    return drawn

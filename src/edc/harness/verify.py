"""Teacher-forced verification of a submission's tokens against the trusted reference.

Usage::

    verifier = Verifier.for_task(task)                    # loads the task's reference model
    report = verifier.verify(outputs)                     # outputs: list[RequestOutput]
    report.correct, report.message, report.to_metrics()   # metrics.correct / tokens_checked / ...

The rule (design.md, "Correctness rule"): one reference forward pass over prompt + the submission's
own tokens; at every step ``i`` the submitted token must satisfy
``max(score) - score[token] <= epsilon``, with ``score`` from the task's sampling rule for that
request and step (the logit for greedy; logit/T + g for hashed Gumbel). Each token is judged on
the submission's own prefix, so a legitimate near-tie flip does not cascade. A request must carry
exactly ``max_new_tokens`` tokens, each inside the vocabulary.

Reported, not gated: ``exact_match_rate`` (tokens before each request's first divergence from the
reference decode, over all expected tokens), ``first_divergence`` per request, ``max_gap``. The
reference's own decode picks the best-scoring token at each step, so on the submission's prefix it
agrees with the submission up to the first token that is not the best: the same teacher-forced
pass gives the divergence, with no decode (every evaluation has its own secret seed, so decodes
could never be reused). ``verify(outputs, expected)`` compares with given decodes instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from edc.tasks.reference import ReferenceBackend
from edc.tasks.sampling import SamplingRule
from edc.tasks.task import Task


@dataclass(frozen=True)
class RequestOutput:
    """What one request asked and what the submission answered (in order)."""

    request_id: str
    prompt: Sequence[int]
    tokens: Sequence[int]
    max_new_tokens: int | None = None  # what it asked for; None: the task's


class FaultKind(StrEnum):
    WRONG_TOKEN = "wrong_token"  # outside ε of the best score at its step
    OUT_OF_VOCAB = "out_of_vocab"  # not an integer id in [0, vocab_size)
    WRONG_COUNT = "wrong_count"  # fewer or more than max_new_tokens


@dataclass(frozen=True)
class TokenFault:
    request_id: str
    kind: FaultKind
    position: int  # index among the generated tokens (0 = first new token)
    token: int | None  # the offending token, when there is one
    gap: float | None  # best score minus the token's score, for WRONG_TOKEN
    epsilon: float
    expected_count: int
    actual_count: int

    @property
    def sentence(self) -> str:
        where = f"request {self.request_id!r}, position {self.position}"
        if self.kind is FaultKind.WRONG_TOKEN:
            return (
                f"Wrong token at {where}: token {self.token} scores {self.gap:.4f} below the "
                f"reference's best, more than the tolerance {self.epsilon}."
            )
        if self.kind is FaultKind.OUT_OF_VOCAB:
            return f"Token {self.token!r} at {where} is not a valid token id."
        return (
            f"Request {self.request_id!r} returned {self.actual_count} tokens; exactly "
            f"{self.expected_count} were asked for."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "kind": self.kind.value,
            "position": self.position,
            "token": self.token,
            "gap": self.gap,
        }


@dataclass(frozen=True)
class RequestVerdict:
    request_id: str
    tokens_checked: int
    max_gap: float
    first_divergence: int | None  # first position differing from the reference decode; None: same
    exact_match_tokens: int  # tokens before the first divergence
    fault: TokenFault | None  # the earliest fault, if any

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "tokens_checked": self.tokens_checked,
            "max_gap": self.max_gap,
            "first_divergence": self.first_divergence,
            "fault": self.fault.to_dict() if self.fault else None,
        }


@dataclass(frozen=True)
class VerificationReport:
    correct: bool
    tokens_checked: int
    max_gap: float
    exact_match_rate: float | None
    epsilon: float
    requests: tuple[RequestVerdict, ...]
    first_fault: TokenFault | None  # the first failing request's earliest fault

    @property
    def message(self) -> str:
        if self.first_fault is None:
            return (
                f"All {self.tokens_checked} tokens of {len(self.requests)} requests are within "
                f"ε = {self.epsilon} of the reference (largest gap {self.max_gap:.4f})."
            )
        return self.first_fault.sentence

    def to_metrics(self) -> dict[str, Any]:
        """The verification part of ``metrics`` (names from design.md)."""
        return {
            "correct": self.correct,
            "tokens_checked": self.tokens_checked,
            "max_gap": self.max_gap,
            "exact_match_rate": self.exact_match_rate,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.to_metrics(),
            "epsilon": self.epsilon,
            "message": self.message,
            "first_fault": self.first_fault.to_dict() if self.first_fault else None,
            "requests": [r.to_dict() for r in self.requests],
        }


def _is_token_id(value: object, vocab_size: int) -> bool:
    # bool is an int subclass; True is not a token.
    return (
        isinstance(value, int | np.integer)
        and not isinstance(value, bool)
        and 0 <= int(value) < vocab_size
    )


class Verifier:
    def __init__(
        self,
        reference: ReferenceBackend,
        rule: SamplingRule,
        *,
        epsilon: float,
        max_new_tokens: int,
    ) -> None:
        self.reference = reference
        self.rule = rule
        self.epsilon = epsilon
        self.max_new_tokens = max_new_tokens

    @classmethod
    def for_task(cls, task: Task, *, float64: bool = False, device: str = "cpu") -> Verifier:
        return cls(
            task.load_reference(float64=float64, device=device),
            task.sampling,
            epsilon=task.epsilon,
            max_new_tokens=task.max_new_tokens,
        )

    def check(self, output: RequestOutput, expected: Sequence[int] | None = None) -> RequestVerdict:
        """Judge one request; ``expected`` is the reference decode, for the reported figures."""
        vocab = self.reference.vocab_size
        tokens = list(output.tokens)
        asked = self.asked(output)
        faults: list[TokenFault] = []

        def fault(kind: FaultKind, position: int, token: int | None, gap: float | None) -> None:
            faults.append(
                TokenFault(
                    request_id=output.request_id,
                    kind=kind,
                    position=position,
                    token=token,
                    gap=gap,
                    epsilon=self.epsilon,
                    expected_count=asked,
                    actual_count=len(tokens),
                )
            )

        if len(tokens) != asked:
            fault(FaultKind.WRONG_COUNT, min(len(tokens), asked), None, None)
        checkable = tokens[:asked]
        for i, tok in enumerate(checkable):
            if not _is_token_id(tok, vocab):
                as_int = tok if isinstance(tok, int) and not isinstance(tok, bool) else None
                fault(FaultKind.OUT_OF_VOCAB, i, as_int, None)
                checkable = checkable[:i]
                break
        ids = [int(t) for t in checkable]
        gaps, best = self._gaps(output.request_id, list(output.prompt), ids)
        wrong = np.flatnonzero(gaps > self.epsilon)
        if wrong.size:
            at = int(wrong[0])
            fault(FaultKind.WRONG_TOKEN, at, ids[at], float(gaps[at]))
        first_divergence: int | None = None
        exact = 0
        if expected is None:
            # The reference's own decode picks the best-scoring token at every step; on the
            # submission's prefix it agrees with the submission up to the first token that is
            # not the best, so that position is the first divergence, with no decode needed.
            differs = np.flatnonzero(np.asarray(ids, dtype=np.int64) != best)
            exact = int(differs[0]) if differs.size else len(ids)
            if exact < asked:
                first_divergence = exact
        else:
            same = 0
            for got, want in zip(tokens, expected, strict=False):
                if got != want:
                    break
                same += 1
            exact = same
            if same < max(len(tokens), len(expected)):
                first_divergence = same
        return RequestVerdict(
            request_id=output.request_id,
            tokens_checked=len(ids),
            max_gap=float(gaps.max()) if len(ids) else 0.0,
            first_divergence=first_divergence,
            exact_match_tokens=exact,
            fault=min(faults, key=lambda f: f.position) if faults else None,
        )

    def _gaps(
        self, request_id: str, prompt: list[int], tokens: list[int]
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Best score minus each token's score at its step, teacher-forced on the own prefix,
        and the best-scoring token at each step."""
        if not prompt:
            raise ValueError(f"request {request_id!r} has an empty prompt")
        if not tokens:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        logits = self.reference.forward_all(prompt + tokens[:-1])
        rows = logits[len(prompt) - 1 :]
        steps = np.arange(len(tokens))
        scores = self.rule.scores(rows, self.rule.request_key(request_id), steps)
        gaps: np.ndarray[Any, Any] = scores.max(axis=1) - scores[steps, tokens]
        return gaps, scores.argmax(axis=1)

    def asked(self, output: RequestOutput) -> int:
        return output.max_new_tokens or self.max_new_tokens

    def verify(
        self,
        outputs: Sequence[RequestOutput],
        expected: Mapping[str, Sequence[int]] | None = None,
    ) -> VerificationReport:
        verdicts = tuple(
            self.check(o, expected.get(o.request_id) if expected is not None else None)
            for o in outputs
        )
        first_fault = next((v.fault for v in verdicts if v.fault is not None), None)
        total = sum(self.asked(o) for o in outputs)
        rate = sum(v.exact_match_tokens for v in verdicts) / total if total else 1.0
        return VerificationReport(
            correct=first_fault is None,
            tokens_checked=sum(v.tokens_checked for v in verdicts),
            max_gap=max((v.max_gap for v in verdicts), default=0.0),
            exact_match_rate=rate,
            epsilon=self.epsilon,
            requests=verdicts,
            first_fault=first_fault,
        )

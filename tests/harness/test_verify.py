from collections.abc import Sequence

import numpy as np
import pytest

from edc.harness.verify import FaultKind, RequestOutput, Verifier
from edc.tasks.reference import ReferenceModel
from edc.tasks.sampling import RequestSampler, SamplingRule
from edc.tasks.task import Prompt, Task, bundled_task_dir


@pytest.fixture(scope="module")
def task() -> Task:
    return Task.load(bundled_task_dir())


@pytest.fixture(scope="module")
def verifier(task: Task) -> Verifier:
    return Verifier.for_task(task)


@pytest.fixture(scope="module")
def prompts(task: Task) -> list[Prompt]:
    return task.public_prompts()[:3]


@pytest.fixture(scope="module")
def reference_outputs(task: Task, verifier: Verifier, prompts: list[Prompt]) -> list[RequestOutput]:
    """What the float32 numpy reference itself decodes for three public prompts."""
    return [
        RequestOutput(
            request_id=p.id,
            prompt=p.tokens,
            tokens=verifier.reference.generate(
                p.tokens, task.max_new_tokens, task.sampling.for_request(p.id)
            ),
        )
        for p in prompts
    ]


def with_tokens(output: RequestOutput, tokens: Sequence[object]) -> RequestOutput:
    return RequestOutput(request_id=output.request_id, prompt=output.prompt, tokens=tokens)  # type: ignore[arg-type]


def test_the_references_own_output_passes(
    verifier: Verifier, reference_outputs: list[RequestOutput]
) -> None:
    expected = {o.request_id: o.tokens for o in reference_outputs}
    report = verifier.verify(reference_outputs, expected)
    assert report.correct, report.message
    assert report.tokens_checked == 3 * 64
    assert report.exact_match_rate == 1.0
    assert report.max_gap == 0.0
    assert all(r.first_divergence is None for r in report.requests)
    assert report.to_metrics() == {
        "correct": True,
        "tokens_checked": 192,
        "max_gap": 0.0,
        "exact_match_rate": 1.0,
    }


def test_float32_output_passes_a_float64_check(
    task: Task, reference_outputs: list[RequestOutput]
) -> None:
    exact = Verifier.for_task(task, float64=True)
    report = exact.verify(reference_outputs)
    assert report.correct, report.message
    assert report.max_gap < 1e-3
    # Derived from the same teacher-forced pass: the reference's own choices are these tokens.
    assert report.exact_match_rate == 1.0


def test_one_wrong_token_fails_naming_request_and_position(
    verifier: Verifier, reference_outputs: list[RequestOutput]
) -> None:
    victim = reference_outputs[1]
    position = 17
    rows = verifier.reference.forward_all(list(victim.prompt) + list(victim.tokens))
    sampler = verifier.rule.for_request(victim.request_id)
    scores = sampler.scores(rows[len(victim.prompt) - 1 + position], position)
    worst = int(np.argmin(scores))
    tokens = list(victim.tokens)
    tokens[position] = worst
    outputs = [reference_outputs[0], with_tokens(victim, tokens), reference_outputs[2]]
    report = verifier.verify(outputs)
    assert not report.correct
    fault = report.first_fault
    assert fault is not None
    assert (fault.kind, fault.request_id, fault.position, fault.token) == (
        FaultKind.WRONG_TOKEN,
        victim.request_id,
        position,
        worst,
    )
    assert fault.gap == pytest.approx(scores.max() - scores[worst])
    assert victim.request_id in report.message and "position 17" in report.message
    assert report.to_dict()["first_fault"]["position"] == 17


def test_a_near_tie_flip_passes_and_does_not_cascade(
    task: Task, reference_outputs: list[RequestOutput]
) -> None:
    """Take the second-best token at the step with the closest call, continue the reference decode
    from that prefix: with ε above that step's gap, every token passes on its own prefix."""
    reference = ReferenceModel.load(task.model_dir)
    out = reference_outputs[0]
    sampler = task.sampling.for_request(out.request_id)
    rows = reference.forward_all(list(out.prompt) + list(out.tokens))[len(out.prompt) - 1 :]
    scores = sampler.scores(rows[:-1], np.arange(task.max_new_tokens))
    top2 = np.sort(scores, axis=1)[:, -2:]
    gaps = top2[:, 1] - top2[:, 0]
    step = int(np.argmin(gaps[: task.max_new_tokens - 8]))
    runner_up = int(np.argsort(scores[step])[-2])
    prefix = [*out.tokens[:step], runner_up]
    rest = _continue(reference, list(out.prompt) + prefix, sampler, step + 1, task.max_new_tokens)
    flipped = with_tokens(out, prefix + rest)
    lenient = Verifier(
        reference,
        task.sampling,
        epsilon=float(gaps[step]) + 1e-6,
        max_new_tokens=task.max_new_tokens,
    )
    report = lenient.verify([flipped], {out.request_id: out.tokens})
    assert report.correct, report.message
    assert report.requests[0].first_divergence == step
    assert report.exact_match_rate == pytest.approx(step / task.max_new_tokens)
    # Without the reference's decode, the same pass finds the same divergence.
    derived = lenient.verify([flipped])
    assert derived.requests[0].first_divergence == step
    assert derived.exact_match_rate == report.exact_match_rate
    strict = Verifier(
        reference, task.sampling, epsilon=float(gaps[step]) / 2, max_new_tokens=task.max_new_tokens
    )
    bad = strict.verify([flipped])
    assert bad.first_fault is not None and bad.first_fault.position == step


def _continue(
    model: ReferenceModel, seq: list[int], sampler: RequestSampler, step: int, total: int
) -> list[int]:
    logits, cache = model.prefill(seq, capacity=len(seq) + total)
    out = []
    for i in range(step, total):
        tok = sampler.choose(logits, i)
        out.append(tok)
        logits = model.decode_step(tok, cache)
    return out


@pytest.mark.parametrize("count", [0, 63, 65])
def test_the_wrong_number_of_tokens_fails(
    verifier: Verifier, reference_outputs: list[RequestOutput], count: int
) -> None:
    out = reference_outputs[0]
    tokens = [*out.tokens, 32][:count]
    report = verifier.verify([with_tokens(out, tokens)])
    assert not report.correct
    assert report.first_fault is not None
    assert report.first_fault.kind is FaultKind.WRONG_COUNT
    assert f"returned {count} tokens; exactly 64" in report.message


@pytest.mark.parametrize("bad", [256, -1, "a", True, 3.0])
def test_out_of_vocabulary_tokens_fail(
    verifier: Verifier, reference_outputs: list[RequestOutput], bad: object
) -> None:
    out = reference_outputs[0]
    tokens: list[object] = list(out.tokens)
    tokens[5] = bad
    report = verifier.verify([with_tokens(out, tokens)])
    fault = report.first_fault
    assert fault is not None
    assert (fault.kind, fault.position) == (FaultKind.OUT_OF_VOCAB, 5)
    assert report.requests[0].tokens_checked == 5


def test_greedy_rule_scores_are_logits(
    task: Task, verifier: Verifier, prompts: list[Prompt]
) -> None:
    rule = SamplingRule(kind="greedy")
    greedy_verifier = Verifier(verifier.reference, rule, epsilon=0.0, max_new_tokens=8)
    p = prompts[0]
    tokens = verifier.reference.generate(p.tokens, 8, rule.for_request(p.id))
    assert greedy_verifier.verify([RequestOutput(p.id, p.tokens, tokens)]).correct
    # The same tokens under the Gumbel rule are (almost surely) not all best.
    gumbel = Verifier(verifier.reference, task.sampling, epsilon=0.0, max_new_tokens=8)
    assert not gumbel.verify([RequestOutput(p.id, p.tokens, tokens)]).correct

import json
import struct
from pathlib import Path

import pytest

from edc.config import Settings
from edc.harness.draw import EvaluationSecret, draw_prompts
from edc.harness.evaluate import draw_session
from edc.harness.runner import ServingPlan
from edc.tasks.task import Prompt, Task, bundled_task_dir, load_task
from edc.tasks.weights import weight_bytes_per_token

from .conftest import TaskFactory


def write_header(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A safetensors file whose data is zeros: only the header matters here."""
    header, offset = {}, 0
    sizes = {"F32": 4, "BF16": 2}
    for name, (dtype, shape) in tensors.items():
        size = sizes[dtype]
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


def test_weight_bytes_of_the_bundled_model_are_every_tensor_once() -> None:
    model = bundled_task_dir() / "model"
    config = json.loads((model / "config.json").read_text())
    assert config["tie_word_embeddings"] is True
    file_size = (model / "model.safetensors").stat().st_size
    weights = weight_bytes_per_token(model)
    # float32: 4 bytes per parameter; the header is the only other content of the file.
    assert 2_500_000 * 4 < weights < file_size
    assert weights % 4 == 0


def test_an_untied_embedding_counts_one_row(tmp_path: Path) -> None:
    write_header(
        tmp_path / "model.safetensors",
        {
            "model.embed_tokens.weight": ("BF16", [1000, 64]),
            "lm_head.weight": ("BF16", [1000, 64]),
            "model.norm.weight": ("F32", [64]),
        },
    )
    assert weight_bytes_per_token(tmp_path) == 64 * 2 + 1000 * 64 * 2 + 64 * 4


def test_the_default_task_is_the_bundled_one(tmp_path: Path, small_task: Task) -> None:
    assert load_task(Settings()).root == bundled_task_dir()
    assert load_task(Settings(task_dir=small_task.root)).root == small_task.root
    assert load_task(Settings(), small_task.root).name == "harness-test"


def test_a_short_pool_is_reused_under_fresh_opaque_ids(make_task: TaskFactory) -> None:
    task = make_task(warmup=2, timed=3, throughput=4, repeats=2)
    prompts = [Prompt(f"p{i}", "x", (120 + i,)) for i in range(5)]
    draw = draw_session(task, prompts, EvaluationSecret.fresh())
    plan = draw.plan
    specs = [
        *plan.warmup,
        *(s for repeat in (*plan.latency, *plan.throughput) for s in repeat),
    ]
    assert len(specs) == 2 + (3 + 4) * 2
    ids = [s.request_id for s in specs]
    assert len(set(ids)) == len(ids)
    # Opaque: nothing of the prompt's id, its position or the plan's order.
    assert all(len(i) == 16 and not i.startswith("p") for i in ids)
    # Every prompt is used before any is used again.
    assert sorted(s.prompt for s in specs[:5]) == sorted(p.tokens for p in prompts)
    assert draw.audit["prompt_ids"][:5] and len(draw.audit["prompt_ids"]) == len(specs)


def test_the_seed_travels_only_with_each_request_and_is_secret(small_task: Task) -> None:
    secret = EvaluationSecret.fresh()
    draw = draw_session(small_task, small_task.hidden_prompts(), secret)
    plan = draw.plan
    assert plan.load_sampling == {"rule": "gumbel", "temperature": 0.8}
    assert plan.sampling == {"rule": "gumbel", "temperature": 0.8, "seed": secret.sampling_seed()}
    # Neither the task's public seed nor another evaluation's.
    assert secret.sampling_seed() != small_task.sampling.seed
    assert EvaluationSecret.fresh().sampling_seed() != secret.sampling_seed()
    assert draw.judged.sampling.seed == secret.sampling_seed()
    assert plan.max_new_tokens == small_task.max_new_tokens
    assert plan.total_requests == 1 + (2 + 3) * 2


def test_the_same_secret_replays_the_same_evaluation(small_task: Task) -> None:
    secret = EvaluationSecret.fresh()
    pool = small_task.hidden_prompts()
    first, again = (
        draw_session(small_task, pool, secret),
        draw_session(small_task, pool, EvaluationSecret.from_hex(secret.hex())),
    )
    assert first.plan == again.plan and first.audit == again.audit
    other = draw_session(small_task, pool, EvaluationSecret.fresh())
    assert other.plan.warmup != first.plan.warmup


def test_a_large_pool_is_drawn_without_repeats_and_differently_each_time(
    small_task: Task,
) -> None:
    pool = [Prompt(f"h{i}", "", (32 + i % 90, 40 + i // 90)) for i in range(2000)]
    picks = [draw_prompts(pool, needed=56, secret=EvaluationSecret.fresh()) for _ in range(3)]
    for drawn in picks:
        assert len({p.id for p in drawn}) == 56
    assert len({tuple(p.id for p in drawn) for drawn in picks}) == 3


@pytest.mark.parametrize("prompt_set", ["hidden", "public"])
def test_both_prompt_sets_plan(small_task: Task, prompt_set: str) -> None:
    prompts = small_task.hidden_prompts() if prompt_set == "hidden" else small_task.public_prompts()
    assert draw_session(small_task, prompts, EvaluationSecret.fresh()).plan.warmup


def test_each_timed_set_is_a_stratified_sample_by_length() -> None:
    pool = [Prompt(f"h{i}", "", tuple(range(1 + i % 200))) for i in range(1000)]
    by_length = sorted(len(p.tokens) for p in pool)
    secret = EvaluationSecret.fresh()
    drawn = draw_prompts(pool, needed=4 + 3 * 12 + 16, secret=secret, groups=[4, 12, 12, 12, 16])
    assert len({p.id for p in drawn}) == len(drawn)
    for start in (4, 16, 28):
        lengths = sorted(len(p.tokens) for p in drawn[start : start + 12])
        for k, length in enumerate(lengths):
            # The k-th shortest of a set comes from the k-th twelfth of the pool by length.
            assert by_length[k * 1000 // 12] <= length <= by_length[(k + 1) * 1000 // 12 - 1]
    # Stratified, yet secret: another evaluation draws other prompts.
    other = draw_prompts(
        pool, needed=56, secret=EvaluationSecret.fresh(), groups=[4, 12, 12, 12, 16]
    )
    assert {p.id for p in other} != {p.id for p in drawn}


def test_the_serving_schedule_comes_from_the_secret_and_replays_with_it() -> None:
    task = Task.load(bundled_task_dir().parent / "tiny_serving")
    assert task.serving is not None
    pool = task.public_prompts()
    secret = EvaluationSecret.fresh()
    first, again, other = (
        draw_session(task, pool, s).plan.serving
        for s in (secret, EvaluationSecret.from_hex(secret.hex()), EvaluationSecret.fresh())
    )
    assert first is not None and again is not None and other is not None

    def schedules(plan: ServingPlan) -> list[list[int]]:
        # What run_sweep sends by: each listed rate as the round it would be measured in.
        return [plan.schedule(rate, i) for i, rate in enumerate(plan.rates)]

    def lengths(plan: ServingPlan) -> list[int | None]:
        return [spec.max_new_tokens for spec in plan.specs]

    # The same secret replays the schedule and the lengths exactly.
    assert schedules(first) == schedules(again)
    assert lengths(first) == lengths(again)
    # Another evaluation's secret: every round's arrival times differ, and so do the lengths.
    assert all(a != b for a, b in zip(schedules(first), schedules(other), strict=True))
    assert lengths(first) != lengths(other)
    # The lengths vary within the task's range, and the schedule is not the sampling seed.
    low, high = task.serving_lengths
    assert all(low <= n <= high for n in lengths(first) if n is not None)
    assert len(set(lengths(first))) > 1
    assert first.schedule_seed == secret.schedule_seed() != secret.sampling_seed()
    # Each round draws afresh: a rate measured again does not replay the same arrivals.
    assert first.schedule(first.rates[0], 0) != first.schedule(first.rates[0], 1)

import json
import struct
from pathlib import Path

import pytest

from edc.config import Settings
from edc.harness.evaluate import load_task, request_plan, session_plan, weight_bytes_per_token
from edc.tasks.task import Prompt, Task, bundled_task_dir

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


def test_a_short_prompt_file_is_reused_under_fresh_ids(make_task: TaskFactory) -> None:
    task = make_task(warmup=2, timed=3, throughput=4, repeats=2)
    prompts = [Prompt(f"p{i}", "x", (120 + i,)) for i in range(5)]
    plan = request_plan(task, prompts)
    used = [*plan.warmup, *(p for repeat in plan.timed for p in repeat), *plan.throughput]
    assert len(used) == 2 + 3 * 2 + 4
    ids = [p.id for p in used]
    assert len(set(ids)) == len(ids)
    assert ids[:5] == [f"p{i}" for i in range(5)]
    assert ids[5:7] == ["p0~1", "p1~1"]
    assert used[5].tokens == prompts[0].tokens


def test_the_session_plan_carries_the_sampling_rule(small_task: Task) -> None:
    plan = session_plan(small_task, small_task.request_plan(small_task.hidden_prompts()))
    assert plan.sampling == {"rule": "gumbel", "temperature": 0.8, "seed": 20261128}
    assert plan.max_new_tokens == small_task.max_new_tokens
    assert plan.total_requests == 1 + 2 * 2 + 3


@pytest.mark.parametrize("prompt_set", ["hidden", "public"])
def test_both_prompt_sets_plan(small_task: Task, prompt_set: str) -> None:
    prompts = small_task.hidden_prompts() if prompt_set == "hidden" else small_task.public_prompts()
    assert request_plan(small_task, prompts).warmup

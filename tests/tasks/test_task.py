import json
import os
from pathlib import Path

import pytest

from edc.config import Settings
from edc.errors import InvalidTask
from edc.harness.draw import EvaluationSecret
from edc.harness.evaluate import draw_session
from edc.tasks.init import init_task
from edc.tasks.sampling import SamplingRule
from edc.tasks.task import Task, bundled_task_dir, task_hardware_class
from tests.support.platform import copy_of_task

BUNDLED = bundled_task_dir()


@pytest.fixture
def task_copy(tmp_path: Path) -> Path:
    """A writable copy of the bundled task (the model symlinked: it is only read)."""
    root = copy_of_task(tmp_path / "task", BUNDLED, leave_out="model")
    (root / "model").mkdir()
    for f in (BUNDLED / "model").iterdir():
        (root / "model" / f.name).symlink_to(f)
    return root


def test_the_bundled_task_loads_with_its_settings() -> None:
    task = Task.load(BUNDLED)
    assert task.name == "tiny-stdlib"
    assert task.vocab_size == 256
    assert task.sampling == SamplingRule(kind="gumbel", temperature=0.8, seed=20261128)
    assert task.max_new_tokens == 64
    assert task.epsilon == 0.1
    assert task.ranking.metric == "latency.e2e_per_token_ms.p50"
    assert task.ranking.direction == "lower"
    assert task.hardware.kind == "cpu"
    assert task.limits.memory_mb > 0
    assert task.model_dir == BUNDLED / "model"


def test_the_bundled_model_is_small_enough_to_commit() -> None:
    assert (BUNDLED / "model" / "model.safetensors").stat().st_size <= 15 * 1024 * 1024


def test_bundled_prompts_are_distinct_sized_and_split_by_file() -> None:
    task = Task.load(BUNDLED)
    public, hidden = task.public_prompts(), task.new_hidden_pool()
    assert len(hidden) == task.prompt_sources.hidden_pool_size
    for prompts in (public, hidden):
        assert len(prompts) >= task.requests.total
        assert len({p.text for p in prompts}) == len(prompts)
        assert all(64 <= len(p.tokens) <= 160 for p in prompts)
        assert all(len(p.tokens) + task.max_new_tokens <= task.max_positions for p in prompts)
    assert not {p.id for p in public} & {p.id for p in hidden}
    assert not {p.text for p in public} & {p.text for p in hidden}


def test_request_plan_gives_disjoint_sets() -> None:
    task = Task.load(BUNDLED)
    plan = task.request_plan(task.new_hidden_pool())
    counts = task.requests
    assert len(plan.warmup) == counts.warmup
    assert [len(t) for t in plan.timed] == [counts.timed] * counts.repeats
    assert [len(t) for t in plan.throughput] == [counts.throughput] * counts.repeats
    assert task.serving is not None
    assert len(plan.serving) == task.serving.max_requests
    ids = [p.id for p in plan.warmup + plan.serving] + [
        p.id for t in (*plan.timed, *plan.throughput) for p in t
    ]
    assert len(ids) == len(set(ids)) == task.prompts_needed


def test_request_plan_refuses_too_few_prompts() -> None:
    task = Task.load(BUNDLED)
    # 4 warm-up + (12 timed + 8 throughput) × 3 repeats + 5 serving rounds × 8 requests
    with pytest.raises(InvalidTask, match="needs 104 prompts"):
        task.request_plan(task.public_prompts()[:10])


def test_model_hash_names_the_weights(task_copy: Path) -> None:
    first = Task.load(task_copy).model_hash()
    assert first == Task.load(BUNDLED).model_hash()
    weights = task_copy / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    weights.unlink()
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert Task.load(task_copy).model_hash() != first


def test_a_directory_without_task_toml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidTask, match=r"no task\.toml"):
        Task.load(tmp_path)


def test_broken_toml_is_refused(task_copy: Path) -> None:
    (task_copy / "task.toml").write_text("name = \n")
    with pytest.raises(InvalidTask, match="Cannot read"):
        Task.load(task_copy)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.replace('rule = "gumbel"', 'rule = "topk"'), "sampling.rule"),
        (lambda s: s.replace("epsilon = 0.1", "epsilon = -1"), "decode.epsilon"),
        (lambda s: s + "\n[extras]\nx = 1\n", "extras"),
        (lambda s: s.replace('direction = "lower"', 'direction = "down"'), "ranking.direction"),
        (lambda s: s.replace("[limits]", "[limits]\nload_timeout = 3"), "limits.load_timeout"),
        # Figures that sending tokens in other chunks improves may not be ranked.
        (lambda s: s.replace("e2e_per_token_ms.p50", "tpot_ms.p50"), "may not rank by"),
        (lambda s: s.replace("e2e_per_token_ms.p50", "itl_ms.p99"), "may not rank by"),
        (lambda s: s.replace("e2e_per_token_ms.p50", "ttft_ms.p50"), "may not rank by"),
        (lambda s: s.replace("e2e_per_token_ms.p50", "load_s"), "may not rank by"),
        (lambda s: s.replace('direction = "lower"', 'direction = "higher"'), "better when lower"),
        (lambda s: s.replace("margin = 0.5", "margin = 2"), "plausibility.margin"),
        # The serving sweep: rising rates, lengths the decode allows, a section to rank by.
        (lambda s: s.replace("rates = [4.0, 8.0", "rates = [8.0, 4.0"), "strictly rising"),
        (lambda s: s.replace("output_tokens = [8, 32]", "output_tokens = [8, 65]"), "above"),
        (lambda s: s.replace("output_tokens = [8, 32]", "output_tokens = [9, 8]"), "low <= high"),
        (lambda s: s.replace("target_share = 0.9", "target_share = 0"), "target_share"),
        (lambda s: s.replace("confirm = 0\n", "confirm = 0\ntime_budget_s = 0\n"), "time_budget"),
        (
            lambda s: (
                s[: s.index("[serving]")]
                + s[s.index("[ranking]") :].replace(
                    '"latency.e2e_per_token_ms.p50"\ndirection = "lower"',
                    '"serving.max_rate_under_slo"\ndirection = "higher"',
                )
            ),
            "needs a \\[serving\\] section",
        ),
    ],
)
def test_invalid_settings_are_named(task_copy: Path, edit: object, message: str) -> None:
    toml = task_copy / "task.toml"
    toml.write_text(edit(toml.read_text()))  # type: ignore[operator]
    with pytest.raises(InvalidTask, match=message):
        Task.load(task_copy)


def test_the_serving_task_shares_the_bundled_model_and_public_prompts() -> None:
    serving = Task.load(BUNDLED.parent / "tiny_serving")
    bundled = Task.load(BUNDLED)
    assert serving.ranking.metric == "serving.max_rate_under_slo"
    assert serving.model_dir == bundled.model_dir
    assert serving.public_prompts() == bundled.public_prompts()
    assert serving.model_hash() == bundled.model_hash()


def test_a_serving_time_budget_is_optional_and_reaches_the_plan(task_copy: Path) -> None:
    assert Task.load(task_copy).serving.time_budget_s is None  # type: ignore[union-attr]
    toml = task_copy / "task.toml"
    budgeted = toml.read_text().replace("confirm = 0\n", "confirm = 0\ntime_budget_s = 12.5\n")
    toml.write_text(budgeted)
    task = Task.load(task_copy)
    assert task.serving is not None and task.serving.time_budget_s == 12.5
    plan = draw_session(task, task.public_prompts(), EvaluationSecret.fresh()).plan
    assert plan.serving is not None and plan.serving.time_budget_s == 12.5


def test_vocab_size_must_match_the_model(task_copy: Path) -> None:
    toml = task_copy / "task.toml"
    toml.write_text(toml.read_text().replace("vocab_size = 256", "vocab_size = 512"))
    with pytest.raises(InvalidTask, match="vocab_size 512"):
        Task.load(task_copy)


def test_missing_weights_are_refused(task_copy: Path) -> None:
    (task_copy / "model" / "model.safetensors").unlink()
    with pytest.raises(InvalidTask, match=r"no model\.safetensors"):
        Task.load(task_copy)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": "a", "text": "x"}', '{"id": "a", "text": "y"}'], "used twice"),
        (['{"id": "a", "text": "' + "x" * 250 + '"}'], "at most 192"),
        (["not json"], "line 1 is not JSON"),
        (['{"text": "no id"}'], '"id"'),
        (['{"id": "a", "tokens": [1, 300]}'], "outside"),
        (['{"id": "a", "text": ""}'], "empty"),
        ([], "holds no prompts"),
    ],
)
def test_bad_prompt_files_are_refused(task_copy: Path, lines: list[str], message: str) -> None:
    path = task_copy / "prompts" / "public.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidTask, match=message):
        Task.load(task_copy).public_prompts()


def test_prompts_may_carry_token_ids(task_copy: Path) -> None:
    path = task_copy / "prompts" / "public.jsonl"
    path.write_text(json.dumps({"id": "t", "tokens": [104, 105]}) + "\n")
    [prompt] = Task.load(task_copy).public_prompts()
    assert prompt.tokens == (104, 105)


def test_init_task_builds_a_task_from_the_bundled_model(tmp_path: Path) -> None:
    prompts = tmp_path / "all.jsonl"
    texts = [
        *(
            json.loads(line)["text"]
            for line in (BUNDLED / "prompts/public.jsonl").read_text().split("\n")
            if line
        ),
        *(p.text for p in Task.load(BUNDLED).new_hidden_pool()[:64]),
    ]
    prompts.write_text(
        "\n".join(json.dumps({"id": f"q{i}", "text": t}) for i, t in enumerate(texts)) + "\n"
    )
    task = init_task(BUNDLED / "model", prompts, tmp_path / "new", hidden_fraction=0.5, name="copy")
    assert task.name == "copy"
    assert task.model_hash() == Task.load(BUNDLED).model_hash()
    public, hidden = task.public_prompts(), task.hidden_prompts()
    assert len(public) + len(hidden) == len(texts)
    assert abs(len(hidden) - len(texts) / 2) <= 1
    assert not {p.id for p in public} & {p.id for p in hidden}
    assert task.sampling.kind == "gumbel"
    assert task.request_plan(hidden)
    with pytest.raises(InvalidTask, match="not empty"):
        init_task(BUNDLED / "model", prompts, tmp_path / "new")


def test_init_task_refuses_too_few_prompts(tmp_path: Path) -> None:
    prompts = tmp_path / "few.jsonl"
    prompts.write_text("\n".join(json.dumps({"text": f"def f{i}(): pass"}) for i in range(20)))
    with pytest.raises(InvalidTask, match="are needed"):
        init_task(BUNDLED / "model", prompts, tmp_path / "new", hidden_fraction=0.5)
    assert not (tmp_path / "new").exists()


def test_the_task_hardware_class_is_read_again_when_task_toml_changes(tmp_path: Path) -> None:
    root = tmp_path / "task"
    copy_of_task(root)
    settings = Settings(data_dir=tmp_path / "data", task_dir=root)
    assert task_hardware_class(settings) == "cpu"
    toml = root / "task.toml"
    toml.write_text(toml.read_text().replace('class = "cpu"', 'class = "h100"', 1))
    os.utime(toml, ns=(toml.stat().st_atime_ns, toml.stat().st_mtime_ns + 1_000_000))
    assert task_hardware_class(settings) == "h100"

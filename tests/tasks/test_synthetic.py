"""The synthetic task: built from a seed, well separated logits, honest decoding passes and a
decoder that skips the model fails (the small variant, through the real sandbox)."""

import json
from pathlib import Path

import numpy as np
import pytest

from edc.cli.local_eval import EXIT_OK, EXIT_SUBMISSION_FAILED, run_eval
from edc.config import Settings
from edc.harness.participant import load_weights as participant_weights
from edc.status import FailureReason
from edc.tasks.reference import LlamaConfig, load_weights
from edc.tasks.synthetic import (
    MIN_GAP,
    bf16_bits,
    build_synthetic_task,
    measure_gap,
    synthetic_config,
)
from edc.tasks.task import Task
from tests.harness.conftest import EXAMPLES, harness_settings  # noqa: F401 - a fixture

# Skips the model: each token is the argmax of the request's Gumbel noise alone.
NOISE_ONLY = """\
import numpy as np
from edc_participant import gumbel_noise, load_config, sampler_for


class Decoder:
    def __init__(self, model_dir):
        self.vocab_size = load_config(model_dir)["vocab_size"]

    def step(self, requests):
        for request in requests:
            noise = gumbel_noise(sampler_for(request).key, len(request.generated), self.vocab_size)
            yield request.id, [int(np.argmax(noise[0]))]
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Task:
    return build_synthetic_task(tmp_path_factory.mktemp("synthetic") / "task", "ci", small=True)


def test_the_same_seed_gives_the_same_bytes(small: Task, tmp_path: Path) -> None:
    again = build_synthetic_task(tmp_path / "again", "ci", small=True)
    files = sorted(p.relative_to(small.root) for p in small.root.rglob("*") if p.is_file())
    assert [str(p) for p in files] == [
        "model/config.json",
        "model/model.safetensors",
        "prompts/hidden.jsonl",
        "prompts/public.jsonl",
        "task.toml",
    ]
    hidden = Path("prompts/hidden.jsonl")
    for rel in files:
        if rel != hidden:
            assert (small.root / rel).read_bytes() == (again.root / rel).read_bytes(), rel
    # The hidden prompts are drawn fresh (the seed is public): never the same twice by default.
    assert (small.root / hidden).read_bytes() != (again.root / hidden).read_bytes()
    assert len(small.hidden_prompts()) == len(again.hidden_prompts()) == 64
    other = build_synthetic_task(tmp_path / "other", "ci", small=True, seed=7)
    assert other.model_hash() != small.model_hash()


def test_the_small_task_is_what_ci_needs(small: Task) -> None:
    assert small.spec.model.tokenizer == "ids"
    assert small.prompt_sources.hidden_source == "file"
    assert small.serving is None
    assert (len(small.public_prompts()), len(small.hidden_prompts())) == (32, 64)
    assert small.model_dir.joinpath("model.safetensors").stat().st_size < 4_000_000


def test_the_median_gap_is_at_least_one_and_recorded(small: Task) -> None:
    gap = measure_gap(
        small.load_reference(), small.hidden_prompts()[:16], small.sampling, small.max_new_tokens
    )
    assert gap.median >= MIN_GAP
    assert gap.positions == 16 * small.max_new_tokens
    assert "Median top-1/top-2 logit gap" in small.description


def test_weights_are_bf16_that_both_readers_widen_alike(small: Task) -> None:
    header_len = int.from_bytes((small.model_dir / "model.safetensors").read_bytes()[:8], "little")
    raw = (small.model_dir / "model.safetensors").read_bytes()[8 : 8 + header_len]
    dtypes = {v["dtype"] for k, v in json.loads(raw).items() if k != "__metadata__"}
    assert dtypes == {"BF16"}
    ours, theirs = load_weights(small.model_dir), participant_weights(str(small.model_dir))
    assert ours.keys() == theirs.keys()
    for name, values in ours.items():
        assert np.array_equal(values, theirs[name]), name


def test_bf16_rounds_to_nearest_ties_to_even() -> None:
    step = 2.0**-7  # BF16's spacing in [1, 2)
    values = np.array(
        [1 + step / 2, 1 + 1.5 * step, 1 + 0.6 * step, -(1 + 0.4 * step), 3.0], dtype=np.float32
    )
    widened = (bf16_bits(values).astype(np.uint32) << np.uint32(16)).view(np.float32)
    assert widened.tolist() == [1.0, 1 + 2 * step, 1 + step, -1.0, 3.0]


def test_honest_decoding_passes(
    small: Task,
    harness_settings: Settings,  # noqa: F811 - the fixture imported above
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run_eval(EXAMPLES / "kvcache", small.root, True, harness_settings)
    out = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK, out
    assert out["metrics"]["correct"] is True


def test_decoding_the_noise_alone_fails(
    small: Task,
    harness_settings: Settings,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    submission = tmp_path / "noise"
    submission.mkdir()
    (submission / "submission.py").write_text(NOISE_ONLY)
    code = run_eval(submission, small.root, True, harness_settings)
    out = json.loads(capsys.readouterr().out)
    assert code == EXIT_SUBMISSION_FAILED
    assert out["reason"] == FailureReason.WRONG_OUTPUT.value, out


def test_full_size_has_llama_3_2_1b_s_shape(tmp_path: Path) -> None:
    raw = synthetic_config()
    (tmp_path / "config.json").write_text(json.dumps(raw))
    config = LlamaConfig.from_json(tmp_path / "config.json")
    assert (
        config.num_hidden_layers,
        config.hidden_size,
        config.intermediate_size,
        config.num_attention_heads,
        config.num_key_value_heads,
        config.head_dim,
        config.vocab_size,
        config.rope_theta,
        config.rms_norm_eps,
    ) == (16, 2048, 8192, 32, 8, 64, 128256, 500000.0, 1e-5)
    assert config.rope_scaling is not None and config.rope_scaling["rope_type"] == "llama3"
    assert not config.tie_word_embeddings
    assert raw["torch_dtype"] == "bfloat16"

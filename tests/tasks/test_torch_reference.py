"""The numpy reference against transformers' LlamaForCausalLM (the optional torch extra)."""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="the torch extra is not installed (pip install 'edc[torch]')"
)
transformers = pytest.importorskip(
    "transformers", reason="the torch extra is not installed (pip install 'edc[torch]')"
)

from edc.errors import InvalidTask  # noqa: E402
from edc.harness.verify import RequestOutput, Verifier  # noqa: E402
from edc.tasks.reference import ReferenceModel  # noqa: E402
from edc.tasks.task import Task, bundled_task_dir  # noqa: E402
from edc.tasks.tokenizer import encode  # noqa: E402
from edc.tasks.torch_reference import TorchReference  # noqa: E402
from tests.support.platform import copy_of_task  # noqa: E402

pytestmark = pytest.mark.slow  # importing transformers alone takes seconds

MODEL_DIR = bundled_task_dir() / "model"
TOKENS = encode(
    "class Queue:\n    def __init__(self, maxsize=0):\n        self.maxsize = maxsize\n" * 2
)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)


def hf_logits(model_dir: Path, tokens: list[int], dtype: object) -> np.ndarray:
    model = transformers.LlamaForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].numpy()


def test_numpy_and_transformers_agree_on_the_bundled_model() -> None:
    hf32 = hf_logits(MODEL_DIR, TOKENS, torch.float32)
    exact = ReferenceModel.load(MODEL_DIR, dtype=np.float64).forward_all(TOKENS)
    # transformers in float32 against the reference computed in float64: float32 rounding, which
    # moves with the CPU's vector kernels (up to 1.2e-5 seen on logits near 11).
    assert np.abs(exact - hf32).max() < 2e-5
    # Both in float32: each carries float32 rounding (~1e-6 relative on logits near 13).
    assert np.abs(ReferenceModel.load(MODEL_DIR).forward_all(TOKENS) - hf32).max() < 2e-5
    # transformers "float64" still normalises in float32, so it is no closer than that.
    assert np.abs(exact - hf_logits(MODEL_DIR, TOKENS, torch.float64)).max() < 1e-5


@pytest.mark.parametrize(
    "extra",
    [
        {"tie_word_embeddings": False},
        {
            "tie_word_embeddings": False,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        },
    ],
    ids=["untied", "llama3-rope"],
)
def test_numpy_and_transformers_agree_on_random_checkpoints(
    tmp_path: Path, extra: dict[str, object]
) -> None:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=64,
        **extra,
    )
    model = transformers.LlamaForCausalLM(config)
    # Random init leaves norms at one; perturb them so the test sees their weights.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(torch.randn_like(param) * 0.3)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["tie_word_embeddings"] is False
    tokens = [int(t) for t in torch.randint(0, 50, (40,))]
    expected = hf_logits(tmp_path, tokens, torch.float32)
    got = ReferenceModel.load(tmp_path).forward_all(tokens)
    assert np.abs(got - expected).max() < 1e-5


def test_torch_reference_output_passes_numpy_verification() -> None:
    task = Task.load(bundled_task_dir())
    torch_ref = TorchReference.load(MODEL_DIR)
    assert torch_ref.vocab_size == 256 and torch_ref.max_positions == 256
    outputs = []
    for prompt in task.public_prompts()[:2]:
        tokens = torch_ref.generate(
            prompt.tokens, task.max_new_tokens, task.sampling.for_request(prompt.id)
        )
        outputs.append(RequestOutput(prompt.id, prompt.tokens, tokens))
    report = Verifier.for_task(task).verify(outputs)
    assert report.correct, report.message
    assert report.max_gap < 1e-3
    last, cache = torch_ref.prefill(TOKENS[:30])
    full = torch_ref.forward_all(TOKENS[:31])
    assert np.abs(last - full[29]).max() < 1e-5
    assert np.abs(torch_ref.decode_step(TOKENS[30], cache) - full[30]).max() < 1e-5


def _task_with_model(tmp_path: Path, lines: str) -> Path:
    root = tmp_path / "task"
    copy_of_task(root)
    toml = root / "task.toml"
    toml.write_text(toml.read_text().replace('reference = "numpy"', lines))
    return root


def test_a_bfloat16_torch_reference_judges_an_honest_decode_correct(tmp_path: Path) -> None:
    # A real-size task verifies in bfloat16 on its GPU; the same path runs here on the CPU.
    task = Task.load(
        _task_with_model(tmp_path, 'reference = "torch"\nreference_dtype = "bfloat16"')
    )
    numpy_ref = ReferenceModel.load(MODEL_DIR)
    outputs = [
        RequestOutput(
            p.id,
            p.tokens,
            numpy_ref.generate(p.tokens, task.max_new_tokens, task.sampling.for_request(p.id)),
        )
        for p in task.public_prompts()[:3]
    ]
    report = Verifier.for_task(task).verify(outputs)
    assert report.correct, report.message
    assert 0 < report.max_gap <= task.epsilon  # bfloat16's own rounding, inside ε


def test_a_gpu_reference_needs_torch_and_a_gpu(tmp_path: Path) -> None:
    with pytest.raises(InvalidTask, match='need reference = "torch"'):
        Task.load(_task_with_model(tmp_path / "a", 'reference = "numpy"\nreference_device = "gpu"'))
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the reference would load there")
    task = Task.load(
        _task_with_model(tmp_path / "b", 'reference = "torch"\nreference_device = "gpu"')
    )
    with pytest.raises(InvalidTask, match="verifies on a GPU"):
        Verifier.for_task(task, device="cuda:0")

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from edc.errors import InvalidTask
from edc.tasks.reference import ReferenceModel
from edc.tasks.sampling import SamplingRule, greedy
from edc.tasks.task import bundled_task_dir
from edc.tasks.tokenizer import encode

MODEL_DIR = bundled_task_dir() / "model"
SNIPPET = encode(
    "import os\n\n\ndef read_config(path):\n    with open(path) as fh:\n        return "
)


@pytest.fixture(scope="module")
def model() -> ReferenceModel:
    return ReferenceModel.load(MODEL_DIR)


def random_llama(
    directory: Path,
    *,
    tied: bool,
    vocab: int = 40,
    hidden: int = 16,
    heads: int = 4,
    kv_heads: int = 2,
    layers: int = 2,
    inter: int = 24,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A small random Llama checkpoint in the Hugging Face layout."""
    rng = np.random.default_rng(seed)
    hd = hidden // heads

    def w(*shape: int) -> np.ndarray:
        return rng.normal(scale=0.3, size=shape).astype(np.float32)

    tensors = {"model.embed_tokens.weight": w(vocab, hidden), "model.norm.weight": 1 + w(hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": 1 + w(hidden),
            p + "post_attention_layernorm.weight": 1 + w(hidden),
            p + "self_attn.q_proj.weight": w(heads * hd, hidden),
            p + "self_attn.k_proj.weight": w(kv_heads * hd, hidden),
            p + "self_attn.v_proj.weight": w(kv_heads * hd, hidden),
            p + "self_attn.o_proj.weight": w(hidden, heads * hd),
            p + "mlp.gate_proj.weight": w(inter, hidden),
            p + "mlp.up_proj.weight": w(inter, hidden),
            p + "mlp.down_proj.weight": w(hidden, inter),
        }
    if not tied:
        tensors["lm_head.weight"] = w(vocab, hidden)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"))
    config = {
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500.0,
        "max_position_embeddings": 64,
        "tie_word_embeddings": tied,
    }
    (directory / "config.json").write_text(json.dumps(config))
    return tensors


def naive_logits(t: dict[str, np.ndarray], cfg: dict[str, Any], tokens: list[int]) -> np.ndarray:
    """A second, loop-per-head float64 implementation written straight from the Llama paper."""
    hidden, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, eps, theta = hidden // heads, cfg["rms_norm_eps"], cfg["rope_theta"]

    def norm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return w * x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)

    def rope(v: np.ndarray, pos: int) -> np.ndarray:
        out = v.copy()
        for i in range(hd // 2):
            # cos and sin in float32, as transformers computes them (the reference copies that).
            angle = np.float32(pos) * np.float32(1.0 / theta ** (2 * i / hd))
            cos, sin = float(np.cos(angle)), float(np.sin(angle))
            a, b = v[i], v[i + hd // 2]
            out[i] = a * cos - b * sin
            out[i + hd // 2] = b * cos + a * sin
        return out

    g = {k: v.astype(np.float64) for k, v in t.items()}
    x = g["model.embed_tokens.weight"][tokens]
    n = len(tokens)
    for li in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{li}."
        h = norm(x, g[p + "input_layernorm.weight"])
        q = h @ g[p + "self_attn.q_proj.weight"].T
        k = h @ g[p + "self_attn.k_proj.weight"].T
        v = h @ g[p + "self_attn.v_proj.weight"].T
        out = np.zeros((n, heads * hd))
        for head in range(heads):
            kvh = head // (heads // kv)
            for i in range(n):
                qi = rope(q[i, head * hd : (head + 1) * hd], i)
                s = np.array(
                    [
                        qi @ rope(k[j, kvh * hd : (kvh + 1) * hd], j) / math.sqrt(hd)
                        for j in range(i + 1)
                    ]
                )
                w = np.exp(s - s.max())
                w /= w.sum()
                out[i, head * hd : (head + 1) * hd] = w @ v[: i + 1, kvh * hd : (kvh + 1) * hd]
        x = x + out @ g[p + "self_attn.o_proj.weight"].T
        h = norm(x, g[p + "post_attention_layernorm.weight"])
        gate = h @ g[p + "mlp.gate_proj.weight"].T
        mlp = (gate / (1 + np.exp(-gate))) * (h @ g[p + "mlp.up_proj.weight"].T)
        x = x + mlp @ g[p + "mlp.down_proj.weight"].T
    head_w = g.get("lm_head.weight", g["model.embed_tokens.weight"])
    return norm(x, g["model.norm.weight"]) @ head_w.T


@pytest.mark.parametrize("tied", [True, False])
def test_matches_an_independent_implementation(tmp_path: Path, tied: bool) -> None:
    tensors = random_llama(tmp_path, tied=tied)
    cfg = json.loads((tmp_path / "config.json").read_text())
    tokens = [3, 17, 0, 39, 22, 5, 5, 11]
    expected = naive_logits(tensors, cfg, tokens)
    got = ReferenceModel.load(tmp_path, dtype=np.float64).forward_all(tokens)
    assert np.abs(got - expected).max() < 1e-9
    got32 = ReferenceModel.load(tmp_path).forward_all(tokens)
    assert got32.dtype == np.float32
    assert np.abs(got32 - expected).max() < 1e-4


def test_kv_cache_decode_equals_the_full_forward(model: ReferenceModel) -> None:
    full = model.forward_all(SNIPPET)
    last, cache = model.prefill(SNIPPET[:40])
    assert np.abs(last - full[39]).max() < 1e-4
    for i in range(40, len(SNIPPET)):
        step = model.decode_step(SNIPPET[i], cache)
        assert np.abs(step - full[i]).max() < 1e-4
    assert cache.length == len(SNIPPET)


def test_float32_is_within_ten_to_the_minus_four_of_float64(model: ReferenceModel) -> None:
    exact = ReferenceModel.load(MODEL_DIR, dtype=np.float64).forward_all(SNIPPET)
    assert np.abs(model.forward_all(SNIPPET) - exact).max() < 1e-4


def test_generate_follows_the_sampler_on_its_own_prefix(model: ReferenceModel) -> None:
    sampler = SamplingRule(kind="gumbel", temperature=0.8, seed=3).for_request("x")
    out = model.generate(SNIPPET, 12, sampler)
    assert len(out) == 12
    logits = model.forward_all(SNIPPET + out[:-1])[len(SNIPPET) - 1 :]
    assert [sampler.choose(row, i) for i, row in enumerate(logits)] == out
    assert model.generate(SNIPPET, 0, greedy()) == []


def test_the_bundled_model_is_trained(model: ReferenceModel) -> None:
    # A random model scores ~ln(256) = 5.5 nats per byte; the trained one far less on held-out code.
    text = encode(
        "    def __init__(self, name, value=None):\n"
        "        self.name = name\n"
        "        self.value = value\n"
    )
    logits = model.forward_all(text)[:-1].astype(np.float64)
    logp = (
        logits
        - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - logits.max(-1, keepdims=True)
    )
    nll = -logp[np.arange(len(text) - 1), text[1:]].mean()
    assert nll < 1.5


def test_bfloat16_and_sharded_weights_load(tmp_path: Path) -> None:
    tensors = random_llama(tmp_path / "f32", tied=False)
    reference = ReferenceModel.load(tmp_path / "f32")
    # Hand-written safetensors with BF16 tensors (the top halves of the float32 bit patterns),
    # split over two shards with an index, as large checkpoints come.
    shard_dir = tmp_path / "bf16"
    shard_dir.mkdir()
    (shard_dir / "config.json").write_text((tmp_path / "f32" / "config.json").read_text())
    names = sorted(tensors)
    weight_map = {}
    for part, chunk in enumerate((names[::2], names[1::2])):
        header: dict[str, Any] = {}
        blobs, offset = [], 0
        for name in chunk:
            bits = (tensors[name].view(np.uint32) >> 16).astype("<u2").tobytes()
            header[name] = {
                "dtype": "BF16",
                "shape": list(tensors[name].shape),
                "data_offsets": [offset, offset + len(bits)],
            }
            blobs.append(bits)
            offset += len(bits)
            weight_map[name] = f"part{part}.safetensors"
        head = json.dumps(header).encode()
        (shard_dir / f"part{part}.safetensors").write_bytes(
            len(head).to_bytes(8, "little") + head + b"".join(blobs)
        )
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    bf16 = ReferenceModel.load(shard_dir)
    tokens = [1, 2, 3, 4, 5]
    diff = np.abs(bf16.forward_all(tokens) - reference.forward_all(tokens)).max()
    assert 0 < diff < 0.5  # truncated mantissas: close, not equal


def test_a_missing_tensor_is_named(tmp_path: Path) -> None:
    tensors = random_llama(tmp_path, tied=True)
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(InvalidTask, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        ReferenceModel.load(tmp_path)


def test_untied_config_without_lm_head_is_refused(tmp_path: Path) -> None:
    random_llama(tmp_path, tied=True)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InvalidTask, match="lm_head"):
        ReferenceModel.load(tmp_path)


def test_unsupported_architectures_are_refused(tmp_path: Path) -> None:
    random_llama(tmp_path, tied=True)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg | {"model_type": "gpt2"}))
    with pytest.raises(InvalidTask, match="gpt2"):
        ReferenceModel.load(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps(cfg | {"rope_scaling": {"rope_type": "yarn", "factor": 2.0}})
    )
    with pytest.raises(InvalidTask, match="yarn"):
        ReferenceModel.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InvalidTask, match="config"):
        ReferenceModel.load(tmp_path)


def test_out_of_vocabulary_input_is_refused(model: ReferenceModel) -> None:
    with pytest.raises(ValueError, match="token ids"):
        model.forward_all([1, 256])

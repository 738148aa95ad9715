"""The trusted numpy reference of a Llama-architecture model (Hugging Face Llama layout).

Usage::

    model = ReferenceModel.load(Path("src/edc/tasks/tiny/model"))            # float32
    exact = ReferenceModel.load(model_dir, dtype=np.float64)                 # for checking checks
    logits = model.forward_all(tokens)              # (len(tokens), vocab): teacher forcing
    last, cache = model.prefill(prompt)             # logits of the last prompt position + KV cache
    nxt = model.decode_step(token, cache)           # one more token through the cache
    out = model.generate(prompt, 64, rule.for_request("pub-003"))   # list of new token ids

Architecture: token embedding, ``num_hidden_layers`` × (RMSNorm → grouped-query attention with
rotary embeddings → residual, RMSNorm → SwiGLU MLP → residual), final RMSNorm, lm_head (tied to the
embedding when ``tie_word_embeddings`` says so). RoPE follows Hugging Face's "rotate half" layout
with ``rope_theta`` from config.json; the ``default`` and ``llama3`` rope types are supported.
Weights come from ``model.safetensors`` (or a sharded ``model.safetensors.index.json``) in F32,
F16, BF16 or F64; they are held in ``dtype``.

Any object with the :class:`ReferenceBackend` methods can serve verification; the torch reference
in :mod:`edc.tasks.torch_reference` is the other one.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from edc.errors import InvalidTask
from edc.tasks.sampling import RequestSampler
from edc.tasks.weights import read_header

FloatArray = NDArray[np.floating[Any]]


class ReferenceBackend(Protocol):
    """What verification and the reference decode need from a model."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def max_positions(self) -> int: ...

    def forward_all(self, tokens: Sequence[int]) -> FloatArray: ...

    def generate(
        self, prompt: Sequence[int], max_new_tokens: int, sampler: RequestSampler
    ) -> list[int]: ...


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    rope_scaling: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, path: Path) -> LlamaConfig:
        try:
            raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidTask(f"Cannot read the model config {path}: {exc}.") from exc
        model_type = raw.get("model_type", "llama")
        if model_type not in ("llama", "mistral", "qwen2"):
            raise InvalidTask(
                f"{path} describes a {model_type!r} model; the reference runs Llama-layout models."
            )
        if raw.get("hidden_act", "silu") != "silu":
            raise InvalidTask(f"{path}: hidden_act must be 'silu' for a Llama-layout model.")
        rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", "llama3"):
            raise InvalidTask(f"{path}: rope type {rope_type!r} is not supported by the reference.")
        try:
            heads = int(raw["num_attention_heads"])
            hidden = int(raw["hidden_size"])
            return cls(
                vocab_size=int(raw["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(raw["intermediate_size"]),
                num_hidden_layers=int(raw["num_hidden_layers"]),
                num_attention_heads=heads,
                num_key_value_heads=int(raw.get("num_key_value_heads") or heads),
                head_dim=int(raw.get("head_dim") or hidden // heads),
                rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
                rope_theta=float(rope.get("rope_theta", raw.get("rope_theta", 10000.0))),
                max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
                tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
                rope_scaling=dict(rope) if rope_type != "default" else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidTask(f"{path} lacks or garbles a Llama config field: {exc}.") from exc


# --- weights ------------------------------------------------------------------------------------

_DTYPES: dict[str, Any] = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def _read_safetensors(path: Path) -> dict[str, NDArray[Any]]:
    """Read one safetensors file into float arrays; BF16 is widened to float32 by bit shift,
    which numpy (having no bfloat16) cannot do through ``safetensors.numpy``."""
    try:
        with path.open("rb") as fh:
            header = read_header(fh)
            data = fh.read()
    except (OSError, ValueError, struct.error) as exc:
        raise InvalidTask(f"Cannot read the weights file {path}: {exc}.") from exc
    tensors: dict[str, NDArray[Any]] = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        dtype = info["dtype"]
        raw = data[start:end]
        if dtype == "BF16":
            halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << np.uint32(16)
            tensors[name] = halves.view(np.float32).reshape(shape)
        elif dtype in _DTYPES:
            tensors[name] = np.frombuffer(raw, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<"))
            tensors[name] = tensors[name].reshape(shape)
        else:
            raise InvalidTask(f"{path}: tensor {name} has dtype {dtype}, not a float type.")
    return tensors


def load_weights(model_dir: Path) -> dict[str, NDArray[Any]]:
    single = model_dir / "model.safetensors"
    index = model_dir / "model.safetensors.index.json"
    if single.is_file():
        return _read_safetensors(single)
    if index.is_file():
        try:
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as exc:
            raise InvalidTask(f"Cannot read the shard index {index}: {exc}.") from exc
        tensors: dict[str, NDArray[Any]] = {}
        for shard in sorted(set(weight_map.values())):
            tensors.update(_read_safetensors(model_dir / shard))
        return tensors
    raise InvalidTask(f"{model_dir} holds neither model.safetensors nor a shard index.")


# --- the model ----------------------------------------------------------------------------------


@dataclass
class KVCache:
    """Keys and values per layer, preallocated to ``capacity`` positions; ``length`` are filled."""

    keys: list[FloatArray]
    values: list[FloatArray]
    length: int = 0

    @property
    def capacity(self) -> int:
        return int(self.keys[0].shape[1]) if self.keys else 0


@dataclass
class _Layer:
    input_norm: FloatArray
    q: FloatArray
    k: FloatArray
    v: FloatArray
    o: FloatArray
    post_norm: FloatArray
    gate: FloatArray
    up: FloatArray
    down: FloatArray
    biases: dict[str, FloatArray] = field(default_factory=dict)


def _rope_inv_freq(config: LlamaConfig) -> NDArray[np.float64]:
    dim = config.head_dim
    # In float32, as transformers computes it: the frequencies then agree to the last bit.
    exponents = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    inv_freq: NDArray[np.float64] = (
        np.float32(1.0) / (np.float32(config.rope_theta) ** exponents)
    ).astype(np.float64)
    scaling = config.rope_scaling
    if scaling is None:
        return inv_freq
    # Llama 3's frequency-dependent stretch, as transformers' _compute_llama3_parameters does it.
    factor = float(scaling["factor"])
    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    old_len = float(scaling.get("original_max_position_embeddings", 8192))
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    result: NDArray[np.float64] = np.where(medium, smoothed, scaled)
    return result


class ReferenceModel:
    """A Llama forward pass in numpy, batch size one, with a KV cache."""

    def __init__(
        self, config: LlamaConfig, weights: dict[str, NDArray[Any]], dtype: Any = np.float32
    ) -> None:
        self.config = config
        self.dtype = np.dtype(dtype)

        def take(name: str) -> FloatArray:
            if name not in weights:
                raise InvalidTask(f"The weights lack the tensor {name!r}.")
            return np.ascontiguousarray(weights[name], dtype=self.dtype)

        c = config
        self.embed = take("model.embed_tokens.weight")
        if self.embed.shape != (c.vocab_size, c.hidden_size):
            raise InvalidTask(
                f"embed_tokens has shape {self.embed.shape}, config says "
                f"({c.vocab_size}, {c.hidden_size})."
            )
        if "lm_head.weight" in weights and not c.tie_word_embeddings:
            self.lm_head_t = np.ascontiguousarray(take("lm_head.weight").T)
        elif c.tie_word_embeddings:
            self.lm_head_t = np.ascontiguousarray(self.embed.T)
        else:
            raise InvalidTask("The weights lack lm_head.weight and the config does not tie it.")
        self._lm_head_64 = self.lm_head_t.astype(np.float64)
        self.final_norm = take("model.norm.weight")
        self.layers: list[_Layer] = []
        for i in range(c.num_hidden_layers):
            p = f"model.layers.{i}."
            # Projections are stored transposed so that x @ W is the forward direction.
            layer = _Layer(
                input_norm=take(p + "input_layernorm.weight"),
                q=np.ascontiguousarray(take(p + "self_attn.q_proj.weight").T),
                k=np.ascontiguousarray(take(p + "self_attn.k_proj.weight").T),
                v=np.ascontiguousarray(take(p + "self_attn.v_proj.weight").T),
                o=np.ascontiguousarray(take(p + "self_attn.o_proj.weight").T),
                post_norm=take(p + "post_attention_layernorm.weight"),
                gate=np.ascontiguousarray(take(p + "mlp.gate_proj.weight").T),
                up=np.ascontiguousarray(take(p + "mlp.up_proj.weight").T),
                down=np.ascontiguousarray(take(p + "mlp.down_proj.weight").T),
            )
            for proj in ("q", "k", "v", "o"):
                name = f"{p}self_attn.{proj}_proj.bias"
                if name in weights:
                    layer.biases[proj] = take(name)
            for proj in ("gate", "up", "down"):
                name = f"{p}mlp.{proj}_proj.bias"
                if name in weights:
                    layer.biases[proj] = take(name)
            self.layers.append(layer)
        self._inv_freq = _rope_inv_freq(c)
        self._group = c.num_attention_heads // c.num_key_value_heads

    @classmethod
    def load(cls, model_dir: Path, *, dtype: Any = np.float32) -> ReferenceModel:
        model_dir = Path(model_dir)
        config = LlamaConfig.from_json(model_dir / "config.json")
        return cls(config, load_weights(model_dir), dtype=dtype)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def max_positions(self) -> int:
        return self.config.max_position_embeddings

    # -- building blocks --

    def _rms_norm(self, x: FloatArray, weight: FloatArray) -> FloatArray:
        var = np.mean(np.square(x), axis=-1, keepdims=True)
        out: FloatArray = weight * (x / np.sqrt(var + self.config.rms_norm_eps))
        return out

    def _rope(self, positions: NDArray[np.int64]) -> tuple[FloatArray, FloatArray]:
        # transformers computes angles in float32; the same here keeps the two within ~1e-6.
        angles = positions.astype(np.float32)[:, None] * self._inv_freq.astype(np.float32)[None]
        angles = np.concatenate([angles, angles], axis=-1)
        return np.cos(angles).astype(self.dtype), np.sin(angles).astype(self.dtype)

    @staticmethod
    def _apply_rope(x: FloatArray, cos: FloatArray, sin: FloatArray) -> FloatArray:
        half = x.shape[-1] // 2
        rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        out: FloatArray = x * cos + rotated * sin
        return out

    def new_cache(self, capacity: int | None = None) -> KVCache:
        c = self.config
        size = capacity or c.max_position_embeddings
        shape = (c.num_key_value_heads, size, c.head_dim)
        return KVCache(
            keys=[np.zeros(shape, dtype=self.dtype) for _ in range(c.num_hidden_layers)],
            values=[np.zeros(shape, dtype=self.dtype) for _ in range(c.num_hidden_layers)],
        )

    def forward(self, tokens: Sequence[int], cache: KVCache | None = None) -> FloatArray:
        """Logits ``(len(tokens), vocab)`` for ``tokens`` following what ``cache`` already holds;
        the cache is extended in place (a fresh one is used when none is given)."""
        c = self.config
        ids = np.asarray(tokens, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError("forward needs a non-empty 1-D sequence of token ids")
        if ids.min() < 0 or ids.max() >= c.vocab_size:
            raise ValueError(f"token ids must lie in [0, {c.vocab_size})")
        if cache is None:
            cache = self.new_cache(len(ids))
        start, n = cache.length, len(ids)
        if start + n > cache.capacity:
            raise ValueError(f"the KV cache holds {cache.capacity} positions, {start + n} needed")
        cos, sin = self._rope(np.arange(start, start + n))
        hd, heads, kv_heads = c.head_dim, c.num_attention_heads, c.num_key_value_heads
        scale = 1.0 / math.sqrt(hd)
        total = start + n
        # Causal mask for the new queries against every cached and new key.
        mask = np.arange(total)[None, :] > (np.arange(start, total)[:, None])
        x = self.embed[ids]
        for li, layer in enumerate(self.layers):
            h = self._rms_norm(x, layer.input_norm)
            q: FloatArray = h @ layer.q
            k: FloatArray = h @ layer.k
            v: FloatArray = h @ layer.v
            if layer.biases:
                q = q + layer.biases.get("q", 0)
                k = k + layer.biases.get("k", 0)
                v = v + layer.biases.get("v", 0)
            q = self._apply_rope(q.reshape(n, heads, hd).transpose(1, 0, 2), cos, sin)
            k = self._apply_rope(k.reshape(n, kv_heads, hd).transpose(1, 0, 2), cos, sin)
            cache.keys[li][:, start:total] = k
            cache.values[li][:, start:total] = v.reshape(n, kv_heads, hd).transpose(1, 0, 2)
            keys = cache.keys[li][:, :total]
            values = cache.values[li][:, :total]
            # Grouped-query attention: query head j reads kv head j // group.
            qg = q.reshape(kv_heads, self._group, n, hd)
            att = np.einsum("kgqd,ksd->kgqs", qg, keys) * scale
            att = np.where(mask, -np.inf, att)
            att = att - att.max(axis=-1, keepdims=True)
            weights = np.exp(att)
            weights = weights / weights.sum(axis=-1, keepdims=True)
            y = np.einsum("kgqs,ksd->qkgd", weights, values).reshape(n, heads * hd)
            attn_out = y @ layer.o
            if "o" in layer.biases:
                attn_out = attn_out + layer.biases["o"]
            x = x + attn_out
            h = self._rms_norm(x, layer.post_norm)
            gate: FloatArray = h @ layer.gate
            up: FloatArray = h @ layer.up
            if layer.biases:
                gate = gate + layer.biases.get("gate", 0)
                up = up + layer.biases.get("up", 0)
            # silu(x) = x * sigmoid(x), with sigmoid through tanh so large |x| cannot overflow.
            mlp = (gate * (0.5 + 0.5 * np.tanh(0.5 * gate)) * up) @ layer.down
            if "down" in layer.biases:
                mlp = mlp + layer.biases["down"]
            x = x + mlp
        cache.length = total
        # The output projection is the longest dot product of all and its error lands directly on
        # the logits; in float64 it costs little and halves the float32 path's error.
        out = self._rms_norm(x, self.final_norm).astype(np.float64) @ self._lm_head_64
        logits: FloatArray = out.astype(self.dtype)
        return logits

    # -- the API verification and decoding use --

    def forward_all(self, tokens: Sequence[int]) -> FloatArray:
        """Logits at every position: row ``i`` predicts token ``i + 1``."""
        return self.forward(tokens)

    def prefill(
        self, tokens: Sequence[int], *, capacity: int | None = None
    ) -> tuple[FloatArray, KVCache]:
        cache = self.new_cache(capacity)
        logits = self.forward(tokens, cache)
        return logits[-1], cache

    def decode_step(self, token: int, cache: KVCache) -> FloatArray:
        logits: FloatArray = self.forward([token], cache)[0]
        return logits

    def generate(
        self, prompt: Sequence[int], max_new_tokens: int, sampler: RequestSampler
    ) -> list[int]:
        if max_new_tokens <= 0:
            return []
        logits, cache = self.prefill(prompt, capacity=len(prompt) + max_new_tokens)
        out: list[int] = []
        for step in range(max_new_tokens):
            token = sampler.choose(logits, step)
            out.append(token)
            if step + 1 < max_new_tokens:
                logits = self.decode_step(token, cache)
        return out

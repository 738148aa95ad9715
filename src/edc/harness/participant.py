"""Helpers for Python submissions, importable inside every sandbox as ``edc_participant``.

The harness copies this file next to the shim, so a ``submission.py`` may write::

    from edc_participant import load_config, load_weights, sampler_for

    config = load_config(model_dir)              # config.json as a dict
    weights = load_weights(model_dir)            # {"model.embed_tokens.weight": ndarray, ...}
    token = sampler_for(request).choose(logits, step=len(request.generated))

It needs only the standard library and numpy, and reads safetensors by hand (an 8-byte
little-endian header length, a JSON header of ``{name: {dtype, shape, data_offsets}}``, then the
raw tensor bytes). The sampling rule is the task's, formula for formula (see
``docs/submission-format.md``); a test checks that it picks the same tokens as the verifier.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3

_FLOAT_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}


# --- the model files ----------------------------------------------------------------------------


def load_config(model_dir: str) -> dict[str, Any]:
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as fh:
        config: dict[str, Any] = json.load(fh)
    return config


def read_safetensors(path: str) -> dict[str, NDArray[Any]]:
    """Every tensor of one file; BF16 widened to float32, other floats kept as stored."""
    with open(path, "rb") as fh:
        data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    (header_len,) = struct.unpack("<Q", data[:8])
    header: dict[str, Any] = json.loads(data[8 : 8 + header_len])
    base = 8 + header_len
    tensors: dict[str, NDArray[Any]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        raw = np.frombuffer(data, dtype=np.uint8, count=end - start, offset=base + start)
        if info["dtype"] == "BF16":
            widened = raw.view("<u2").astype(np.uint32) << np.uint32(16)
            tensors[name] = widened.view(np.float32).reshape(shape)
        elif info["dtype"] in _FLOAT_DTYPES:
            tensors[name] = raw.view(_FLOAT_DTYPES[info["dtype"]]).reshape(shape)
        else:
            raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}, not a float")
    return tensors


def load_weights(model_dir: str) -> dict[str, NDArray[Any]]:
    """``model.safetensors``, or every shard a ``model.safetensors.index.json`` names."""
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.isfile(single):
        return read_safetensors(single)
    with open(os.path.join(model_dir, "model.safetensors.index.json"), encoding="utf-8") as fh:
        weight_map: dict[str, str] = json.load(fh)["weight_map"]
    tensors: dict[str, NDArray[Any]] = {}
    for shard in sorted(set(weight_map.values())):
        tensors.update(read_safetensors(os.path.join(model_dir, shard)))
    return tensors


# --- the sampling rule --------------------------------------------------------------------------


def splitmix64(x: int) -> int:
    z = (x + _GAMMA) & MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & MASK64
    return z ^ (z >> 31)


def fnv1a64(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & MASK64
    return h


def request_key(seed: int, request_id: str) -> int:
    return splitmix64((seed & MASK64) ^ fnv1a64(request_id.encode("utf-8")))


def _splitmix64_array(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    # uint64 array arithmetic wraps modulo 2**64, as the rule wants.
    z = x + np.uint64(_GAMMA)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
    return z ^ (z >> np.uint64(31))


def gumbel_noise(key: int, steps: Any, vocab_size: int) -> NDArray[np.float64]:
    """g for every (step, token): shape ``(len(steps), vocab_size)``."""
    step_keys = _splitmix64_array(np.uint64(key) ^ np.atleast_1d(np.asarray(steps, np.uint64)))
    tokens = np.arange(vocab_size, dtype=np.uint64)
    bits = _splitmix64_array(step_keys[:, None] ^ tokens[None, :])
    u = ((bits >> np.uint64(12)).astype(np.float64) + 0.5) * 2.0**-52
    noise: NDArray[np.float64] = -np.log(-np.log(u))
    return noise


class _HasSampling(Protocol):
    id: str
    sampling: dict[str, Any]


class Sampler:
    """The task's rule bound to one request: ``choose(logits, step)`` picks the token."""

    def __init__(self, sampling: dict[str, Any], request_id: str) -> None:
        self.rule: str = sampling.get("rule", "greedy")
        self.temperature = float(sampling.get("temperature", 1.0))
        self.key = request_key(int(sampling.get("seed", 0)), request_id)

    def scores(self, logits: Any, steps: Any) -> NDArray[np.float64]:
        """Scores for ``(vocab,)`` logits at one step, or ``(n, vocab)`` logits at n steps."""
        values = np.asarray(logits, dtype=np.float64)
        if self.rule == "greedy":
            return values
        rows = np.atleast_2d(values)
        out = rows / self.temperature + gumbel_noise(self.key, steps, rows.shape[-1])
        return out.reshape(values.shape)

    def choose(self, logits: Any, step: int) -> int:
        """``step`` counts generated tokens: 0 for a request's first new token."""
        return int(np.argmax(self.scores(logits, step)))

    def choose_many(self, logits_rows: Any, steps: Any) -> list[int]:
        return [int(t) for t in np.argmax(self.scores(logits_rows, steps), axis=-1)]


def sampler_for(request: _HasSampling) -> Sampler:
    return Sampler(request.sampling, request.id)

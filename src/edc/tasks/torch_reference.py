"""A torch/transformers reference for real checkpoints, with the numpy reference's API.

Needs the ``torch`` extra (``pip install "edc[torch]"``). Usage::

    model = TorchReference.load(Path("path/to/llama-dir"))          # float32 on CPU
    fast = TorchReference.load(model_dir, dtype="bfloat16", device="cuda:0")
    logits = model.forward_all(tokens)                              # numpy (len, vocab)
    last, cache = model.prefill(prompt); nxt = model.decode_step(tok, cache)
    out = model.generate(prompt, 64, rule.for_request("pub-003"))

The checkpoint is read from the local directory only (``local_files_only``): nothing is fetched.
A task selects it with ``reference = "torch"`` under ``[model]`` in task.toml, and may run it on
the worker's GPU (``reference_device = "gpu"``) in bfloat16 (``reference_dtype``). Logits always
come back to the host as float32 (float64 for a float64 model), where the sampling rule reads them.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edc.errors import InvalidTask
from edc.tasks.reference import FloatArray
from edc.tasks.sampling import RequestSampler

DTYPES = ("float32", "bfloat16", "float64")


def release_device_memory() -> None:
    """Hand back to the GPU what torch's allocator keeps cached after a reference is dropped."""
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        torch.cuda.empty_cache()


class TorchReference:
    def __init__(self, model: Any, *, threads: int | None = None, device: str = "cpu") -> None:
        import torch

        self._torch = torch
        self._model = model
        self._device = device
        if threads is not None:
            torch.set_num_threads(threads)
        config = model.config
        # transformers renamed past_key_values to cache (5.2x); speak whichever this one knows.
        self._cache_arg = (
            "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        )
        self._vocab_size = int(config.vocab_size)
        self._max_positions = int(getattr(config, "max_position_embeddings", 2048))

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        threads: int | None = None,
    ) -> TorchReference:
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError as exc:
            raise InvalidTask(
                'The torch reference needs the torch extra: pip install "edc[torch]".'
            ) from exc
        if dtype not in DTYPES:
            raise InvalidTask(f"The torch reference has no dtype {dtype!r}; one of {DTYPES}.")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InvalidTask(
                f"The task verifies on a GPU ({device}), but torch sees none on this machine."
            )
        try:
            model: Any = AutoModelForCausalLM.from_pretrained(
                str(model_dir), dtype=getattr(torch, dtype), local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise InvalidTask(f"transformers cannot load {model_dir}: {exc}") from exc
        model.to(device)
        model.eval()
        return cls(model, threads=threads, device=device)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def max_positions(self) -> int:
        return self._max_positions

    def _run(self, tokens: Sequence[int], cache: Any = None) -> tuple[FloatArray, Any]:
        torch = self._torch
        ids = torch.tensor([list(tokens)], dtype=torch.long, device=self._device)
        with torch.no_grad():
            out = self._model(input_ids=ids, use_cache=True, **{self._cache_arg: cache})
        rows = out.logits[0]
        wide = torch.float64 if rows.dtype == torch.float64 else torch.float32
        logits: FloatArray = rows.to(device="cpu", dtype=wide).numpy()
        return logits, getattr(out, self._cache_arg)

    def forward_all(self, tokens: Sequence[int]) -> FloatArray:
        return self._run(tokens)[0]

    def prefill(self, tokens: Sequence[int]) -> tuple[FloatArray, Any]:
        logits, cache = self._run(tokens)
        return logits[-1], cache

    def decode_step(self, token: int, cache: Any) -> FloatArray:
        logits: FloatArray = self._run([token], cache)[0][0]
        return logits

    def generate(
        self, prompt: Sequence[int], max_new_tokens: int, sampler: RequestSampler
    ) -> list[int]:
        if max_new_tokens <= 0:
            return []
        logits, cache = self.prefill(prompt)
        out: list[int] = []
        for step in range(max_new_tokens):
            token = sampler.choose(np.asarray(logits), step)
            out.append(token)
            if step + 1 < max_new_tokens:
                logits = self.decode_step(token, cache)
        return out

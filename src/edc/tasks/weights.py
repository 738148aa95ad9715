"""Reading safetensors files: the header (names, dtypes, shapes, offsets), and what one decode step
reads of a model's weights (the roofline's numerator).

The format: 8 bytes little-endian header length, a JSON header of ``{name: {dtype, shape,
data_offsets}}`` (plus an optional ``__metadata__``), then the tensors' bytes. The participant
runtime (:mod:`edc.harness.participant`) keeps its own few lines for this: it runs inside the
sandbox, where nothing of the platform may be imported.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO


def read_header(fh: BinaryIO) -> dict[str, Any]:
    """The tensors' entries of a safetensors header; leaves ``fh`` at the first data byte."""
    (header_len,) = struct.unpack("<Q", fh.read(8))
    header: dict[str, Any] = json.loads(fh.read(header_len))
    header.pop("__metadata__", None)
    return header


@dataclass(frozen=True)
class WeightsPerToken:
    """What one decode step reads of the weights: every tensor once, except that an untied input
    embedding contributes a single row (a lookup), not the whole table."""

    bytes: int  # as stored
    count: int  # weights, whatever their format


def weights_per_token(model_dir: Path) -> WeightsPerToken:
    tensors: dict[str, tuple[int, tuple[int, ...]]] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        with path.open("rb") as fh:
            header = read_header(fh)
        for name, info in header.items():
            start, end = info["data_offsets"]
            tensors[name] = (end - start, tuple(info["shape"]))
    size = sum(nbytes for nbytes, _ in tensors.values())
    count = sum(math.prod(shape) for _, shape in tensors.values())
    embed = tensors.get("model.embed_tokens.weight")
    if embed is not None and "lm_head.weight" in tensors:
        nbytes, shape = embed
        rows = max(shape[0], 1)
        size -= nbytes - nbytes // rows
        count -= math.prod(shape) - math.prod(shape) // rows
    return WeightsPerToken(bytes=size, count=count)


def weight_bytes_per_token(model_dir: Path) -> int:
    return weights_per_token(model_dir).bytes

"""Build a task directory from any local Hugging Face Llama-layout checkpoint and a prompts file.

Usage (what ``edc task init --model DIR --prompts FILE [--hidden-fraction F] --out DIR`` calls)::

    task = init_task(model_dir, prompts_file, out_dir, hidden_fraction=0.5)

The prompts file holds JSON lines ``{"id": ..., "text": ...}`` (an id is made up when absent) or
``{"id": ..., "tokens": [...]}``. A model with a 256-entry vocabulary uses the byte tokenizer;
any other needs token ids, taken from the lines themselves or, when the model directory has a
``tokenizer.json`` and the ``tokenizers`` package is installed, computed here once, so the platform
never tokenises at run time. Prompts are shuffled with ``split_seed`` and split into public and
hidden sets; both must hold enough prompts for the request counts. The model files are copied into
``out_dir/model``. The result is loaded back with :meth:`Task.load`, so a task that comes out of
here is known to be valid.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any, Literal

from edc.errors import InvalidTask
from edc.tasks.reference import LlamaConfig
from edc.tasks.task import HIDDEN_PROMPTS, PUBLIC_PROMPTS, TASK_FILE, Task
from edc.tasks.tokenizer import VOCAB_SIZE, encode

_MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".model", ".txt")


def _toml_str(value: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes, \\uXXXX included).
    return json.dumps(value, ensure_ascii=True)


def _read_rows(prompts_file: Path) -> list[dict[str, Any]]:
    try:
        lines = prompts_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidTask(f"Cannot read the prompts file {prompts_file}: {exc}.") from exc
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InvalidTask(f"{prompts_file} line {number} is not JSON: {exc}.") from exc
        if not isinstance(row, dict) or not ("text" in row or "tokens" in row):
            raise InvalidTask(f'{prompts_file} line {number} needs a "text" or "tokens" field.')
        row.setdefault("id", f"p{number:05d}")
        row["id"] = str(row["id"])
        rows.append(row)
    if not rows:
        raise InvalidTask(f"The prompts file {prompts_file} holds no prompts.")
    return rows


def _tokenize(rows: list[dict[str, Any]], model_dir: Path, vocab_size: int) -> bool:
    """Give every row token ids if needed; True when the byte tokenizer applies."""
    if all("tokens" in r for r in rows):
        return False
    if vocab_size == VOCAB_SIZE:
        return True
    tokenizer_file = model_dir / "tokenizer.json"
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise InvalidTask(
            "The model's vocabulary is not bytes, so prompts need token ids: give them as "
            '"tokens" or install the tokenizers package.'
        ) from exc
    if not tokenizer_file.is_file():
        raise InvalidTask(
            f'{model_dir} has no tokenizer.json; give the prompts as "tokens" lists instead.'
        )
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    for row in rows:
        if "tokens" not in row:
            row["tokens"] = tokenizer.encode(row["text"]).ids
    return False


def init_task(
    model_dir: Path,
    prompts_file: Path,
    out_dir: Path,
    hidden_fraction: float = 0.5,
    *,
    name: str | None = None,
    description: str = "",
    max_new_tokens: int = 64,
    rule: Literal["greedy", "gumbel"] = "gumbel",
    temperature: float = 0.8,
    seed: int = 20261128,
    epsilon: float = 0.1,
    warmup: int = 4,
    timed: int = 12,
    throughput: int = 8,
    repeats: int = 3,
    reference: Literal["numpy", "torch"] = "numpy",
    split_seed: int = 0,
) -> Task:
    model_dir = Path(model_dir)
    out_dir = Path(out_dir)
    if not 0 < hidden_fraction < 1:
        raise InvalidTask("The hidden fraction must lie strictly between 0 and 1.")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InvalidTask(f"{out_dir} exists and is not empty; choose a new directory.")
    config = LlamaConfig.from_json(model_dir / "config.json")
    rows = _read_rows(Path(prompts_file))
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise InvalidTask(f"{prompts_file} uses some prompt id more than once.")
    bytes_tokenizer = _tokenize(rows, model_dir, config.vocab_size)
    room = config.max_position_embeddings - max_new_tokens
    for row in rows:
        length = len(row["tokens"]) if "tokens" in row else len(encode(row["text"]))
        if length > room:
            raise InvalidTask(
                f"Prompt {row['id']!r} has {length} tokens; the model's "
                f"{config.max_position_embeddings} positions leave room for {room} besides "
                f"max_new_tokens {max_new_tokens}."
            )
    random.Random(split_seed).shuffle(rows)
    n_hidden = round(len(rows) * hidden_fraction)
    hidden, public = rows[:n_hidden], rows[n_hidden:]
    needed = warmup + (timed + throughput) * repeats
    for label, group in (("public", public), ("hidden", hidden)):
        if len(group) < needed:
            raise InvalidTask(
                f"The {label} set would hold {len(group)} prompts but {needed} are needed "
                f"({warmup} warm-up + ({timed} timed + {throughput} throughput) × {repeats}); "
                "give more prompts or change the hidden fraction."
            )

    (out_dir / "model").mkdir(parents=True, exist_ok=True)
    (out_dir / "prompts").mkdir(parents=True, exist_ok=True)
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and path.name.endswith(_MODEL_FILE_SUFFIXES):
            shutil.copy2(path, out_dir / "model" / path.name)
    for rel, group in ((PUBLIC_PROMPTS, public), (HIDDEN_PROMPTS, hidden)):
        lines = []
        for row in group:
            entry: dict[str, Any] = {"id": row["id"]}
            if "text" in row:
                entry["text"] = row["text"]
            if "tokens" in row:
                entry["tokens"] = row["tokens"]
            lines.append(json.dumps(entry))
        (out_dir / rel).write_text("\n".join(lines) + "\n", encoding="utf-8")

    task_name = name or model_dir.resolve().name
    toml = f"""# Made by `edc task init` from {_toml_str(str(model_dir))}.
name = {_toml_str(task_name)}
version = "1"
description = {_toml_str(description)}

[model]
dir = "model"
vocab_size = {config.vocab_size}
tokenizer = "{"bytes" if bytes_tokenizer else "ids"}"
reference = "{reference}"

[decode]
max_new_tokens = {max_new_tokens}
epsilon = {epsilon!r}

[sampling]
rule = "{rule}"
temperature = {temperature!r}
seed = {seed}

[requests]
warmup = {warmup}
timed = {timed}
throughput = {throughput}
repeats = {repeats}

[limits]
load_timeout_s = 120
run_timeout_s = 600
memory_mb = 4096
pids = 256
cpus = 2.0

[ranking]
metric = "latency.e2e_per_token_ms.p50"
direction = "lower"

[hardware]
class = "cpu"
"""
    (out_dir / TASK_FILE).write_text(toml, encoding="utf-8")
    return Task.load(out_dir)

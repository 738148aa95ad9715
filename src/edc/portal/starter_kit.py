"""A track's starter kit: what a participant needs to begin, as one zip, and nothing hidden.

It holds a README (the task's public facts, the same list the task page shows, and how to
evaluate locally), the public prompts, the model's ``config.json`` and, when the model is small
enough to download, its weights, and the task's baseline submission as an example. Never the
task's ``task.toml`` (its seed), its hidden prompts or anything else of the task directory: every
file is chosen by name here.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from edc.portal.task_facts import TaskFacts
from edc.tasks.task import Task

# Weights above this stay out (a real-size model is gigabytes); the README says so.
MAX_WEIGHTS_BYTES = 64 * 1024 * 1024
WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")


def _readme(track: str, facts: TaskFacts, weights_included: bool) -> str:
    lines = [
        f"# Starter kit: track {track}, task {facts.name} (version {facts.version})",
        "",
        facts.description,
        "",
    ]
    for title, section in facts.sections:
        lines += [f"## {title}", ""]
        lines += [f"- {fact.label}: {fact.value}" for fact in section]
        lines.append("")
    lines += [
        "## In this kit",
        "",
        "- `prompts/public.jsonl`: the public prompts (the evaluation uses hidden ones, drawn "
        "like these).",
        "- `model/config.json`: the model's architecture."
        + (
            " `model/` holds its weights too."
            if weights_included
            else " The weights are too large for this download: the organisers say where to "
            "get them."
        ),
        "- `examples/baseline/`: the organisers' reference submission, where the task has one.",
        "",
        "## Evaluate locally, exactly as the platform does",
        "",
        "```",
        "pip install edc   # the platform's package: edc eval, edc submit",
        "edc eval examples/baseline",
        f"edc submit my-decoder/ --track {track}",
        "```",
        "",
        f"Submission format: protocol version {facts.protocol_version}; see the task page.",
        "",
    ]
    return "\n".join(lines)


def starter_kit(track: str, task: Task, facts: TaskFacts) -> bytes:
    """The zip's bytes for ``track``, judged by ``task`` (``facts`` are the task page's)."""
    weights = [
        p
        for p in sorted(task.model_dir.iterdir())
        if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
    ]
    include_weights = sum(p.stat().st_size for p in weights) <= MAX_WEIGHTS_BYTES
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as kit:
        kit.writestr("README.md", _readme(track, facts, include_weights))
        if task.public_prompts_path.is_file():
            kit.write(task.public_prompts_path, "prompts/public.jsonl")
        kit.write(task.model_dir / "config.json", "model/config.json")
        if include_weights:
            for path in weights:
                kit.write(path, f"model/{path.name}")
        if task.baseline_dir is not None:
            for path in _files(task.baseline_dir):
                kit.write(path, f"examples/baseline/{path.relative_to(task.baseline_dir)}")
    return buffer.getvalue()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)

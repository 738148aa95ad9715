"""The bundled task's corpus: the Python standard library's own sources, split by file.

Files are split into train / held-out by a hash of their relative path, so every machine with the
same Python rebuilds the same split. Prompts come only from held-out files: the public ones from
one half (``prompts/public.jsonl``, shipped), the hidden pool from the other half, drawn afresh
with secret randomness on each server (``hidden_snippets``, used by ``edc.tasks.pool``).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path


def stdlib_dir() -> Path:
    return (
        Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    )


def stdlib_files(root: Path | None = None) -> list[Path]:
    """Every stdlib ``.py`` file except third-party packages and test suites, in a stable order."""
    base = root or stdlib_dir()
    skip_parts = {"site-packages", "test", "tests", "idle_test"}
    files = [
        p
        for p in base.rglob("*.py")
        if not skip_parts.intersection(p.relative_to(base).parts) and p.is_file()
    ]
    return sorted(files, key=lambda p: p.relative_to(base).as_posix())


def is_held_out(relative: str) -> bool:
    """About one file in sixteen is held out, chosen by a hash of its path (stable everywhere)."""
    return hashlib.sha256(relative.encode()).digest()[0] % 16 == 0


def load_corpus(root: Path | None = None) -> tuple[bytes, bytes, list[Path]]:
    """(train bytes, held-out bytes, held-out files)."""
    base = root or stdlib_dir()
    train: list[bytes] = []
    held: list[bytes] = []
    held_files: list[Path] = []
    for path in stdlib_files(base):
        data = path.read_bytes()
        if is_held_out(path.relative_to(base).as_posix()):
            held.append(data)
            held_files.append(path)
        else:
            train.append(data)
    return b"\n\n".join(train), b"\n\n".join(held), held_files


def ascii_text(path: Path) -> str:
    """A file's text with every non-ASCII character dropped: what snippets are cut from."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return "".join(ch for ch in text if ch.isascii())


def snippets_from(path: Path, *, count: int, rng: random.Random, seen: set[str]) -> list[str]:
    """Up to ``count`` new prompt snippets (64–160 ASCII bytes, from a line start) of one file."""
    text = ascii_text(path)
    line_starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    out: list[str] = []
    attempts = 0
    while len(out) < count and attempts < count * 50:
        attempts += 1
        start = rng.choice(line_starts)
        snippet = text[start : start + rng.randint(64, 160)]
        # Mostly-blank windows make dull prompts; so do exact repeats.
        if len(snippet) < 64 or len(snippet.split()) < 4 or snippet in seen:
            continue
        seen.add(snippet)
        out.append(snippet)
    return out


PROMPTS_PER_FILE = 64
PROMPT_SPLIT_SEED = 1


def prompt_file_groups(
    held_files: Sequence[Path], *, seed: int = PROMPT_SPLIT_SEED
) -> tuple[list[Path], list[Path]]:
    """The held-out files public prompts come from, and the disjoint ones hidden prompts do."""
    rng = random.Random(seed)
    files = [f for f in held_files if f.stat().st_size > 2000]
    rng.shuffle(files)
    half = len(files) // 2
    return files[:half], files[half:]


def hidden_snippets(
    count: int, rng: random.Random, *, public: Sequence[str] = (), root: Path | None = None
) -> list[str]:
    """``count`` distinct snippets of the hidden half of the held-out files, drawn with ``rng``
    (pass ``random.SystemRandom()``: the hidden pool must not be regenerable from a seed).

    ``public`` are the shipped public prompts: a file that holds any of them is skipped. The
    halves come from a shuffle of the files present, so another Python patch release (a file
    added, one grown past the size cut) can move a public prompt's file into the hidden half."""
    _, _, held_files = load_corpus(root)
    _, candidates = prompt_file_groups(held_files)
    files = [path for path in candidates if not _holds_any(path, public)]
    seen: set[str] = set(public)
    out: list[str] = []
    per_file = max(1, -(-count // max(len(files), 1)))
    for path in files:
        out.extend(snippets_from(path, count=per_file, rng=rng, seen=seen))
    if len(out) < count:
        raise RuntimeError(f"only {len(out)} hidden prompts could be drawn, {count} wanted")
    rng.shuffle(out)
    return out[:count]


def _holds_any(path: Path, texts: Sequence[str]) -> bool:
    content = ascii_text(path)
    return any(text in content for text in texts)


def write_prompts(out_dir: Path, held_files: Sequence[Path], *, seed: int = 1) -> None:
    """public.jsonl: 64 prompts from the public half of the held-out files. The hidden prompts
    are never written here: each server draws its own pool (``hidden_snippets``)."""
    rng = random.Random(seed)
    public_files, _ = prompt_file_groups(held_files, seed=seed)
    seen: set[str] = set()
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, group, prefix in (("public", public_files, "pub"),):
        prompts: list[str] = []
        for path in group:
            prompts.extend(snippets_from(path, count=6, rng=rng, seen=seen))
            if len(prompts) >= PROMPTS_PER_FILE:
                break
        if len(prompts) < PROMPTS_PER_FILE:
            raise RuntimeError(f"only {len(prompts)} {name} prompts could be drawn")
        rows = [
            json.dumps({"id": f"{prefix}-{i:03d}", "text": text})
            for i, text in enumerate(prompts[:PROMPTS_PER_FILE])
        ]
        (out_dir / f"{name}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")

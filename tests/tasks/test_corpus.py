"""The hidden pool's files never include one a shipped public prompt was cut from, even when the
local Python's file set puts that file in the hidden half."""

from __future__ import annotations

import random
from pathlib import Path

from edc.tasks.corpus import hidden_snippets, is_held_out, load_corpus, prompt_file_groups


def _fake_stdlib(root: Path, files: int) -> None:
    """``files`` held-out modules of distinct lines, each over the size the halves require."""
    made, n = 0, 0
    while made < files:
        name = f"mod{n}.py"
        n += 1
        if not is_held_out(name):
            continue
        lines = [f"value_{made}_{j} = compute({made}, {j}) + other_{j}" for j in range(80)]
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        made += 1


def test_a_file_holding_a_public_prompt_is_not_drawn_from(tmp_path: Path) -> None:
    _fake_stdlib(tmp_path, files=6)
    _, _, held = load_corpus(tmp_path)
    _, hidden_half = prompt_file_groups(held)
    moved = hidden_half[0]  # as if another patch release had shuffled it into the hidden half
    public_text = moved.read_text(encoding="utf-8")[:120]

    drawn = hidden_snippets(60, random.Random(7), public=[public_text], root=tmp_path)

    assert len(drawn) == 60
    moved_text = moved.read_text(encoding="utf-8")
    assert not [text for text in drawn if text in moved_text]
    others = [p.read_text(encoding="utf-8") for p in hidden_half[1:]]
    assert all(any(text in other for other in others) for text in drawn)


def test_without_public_prompts_every_hidden_file_is_used(tmp_path: Path) -> None:
    _fake_stdlib(tmp_path, files=6)
    _, _, held = load_corpus(tmp_path)
    _, hidden_half = prompt_file_groups(held)

    drawn = hidden_snippets(60, random.Random(7), root=tmp_path)

    used = {p for p in hidden_half for text in drawn if text in p.read_text(encoding="utf-8")}
    assert used == set(hidden_half)

"""The hidden prompt pool: one per task, in the database, shared by every worker.

Each evaluation draws its prompts from here with its own secret (``edc.harness.draw``). The pool is
never in the package and never per host, and nothing inside a sandbox can read or regenerate it:

- a ``file`` task's pool is its server-side ``prompts/hidden.jsonl``, imported the first time it
  is needed (``edc task import-pool`` replaces it);
- a ``stdlib`` task's pool (the bundled one) is drawn from the held-out standard-library files with
  the operating system's randomness the first time it is needed, then kept.

Whoever needs the pool first seeds it; two seeding at once collide on the unique (task, id) key
and the loser reads the winner's pool.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from edc import db
from edc.config import Settings
from edc.models import HiddenPrompt
from edc.tasks.task import Prompt, Task


def hidden_pool(settings: Settings, task: Task) -> list[Prompt]:
    """The task's pool, seeding it first when the database has none."""
    prompts = _read(settings, task)
    if prompts:
        return prompts
    # A process seeding at the same moment collides on the unique key: its pool is the one.
    with contextlib.suppress(IntegrityError):
        _store(settings, task, task.new_hidden_pool(), replace=False)
    return _read(settings, task)


def pool_size(settings: Settings, task: Task) -> int:
    with db.session_scope(settings) as session:
        count = session.scalar(
            select(func.count()).select_from(HiddenPrompt).where(HiddenPrompt.task == task.name)
        )
    return int(count or 0)


def import_pool(settings: Settings, task: Task, path: Path) -> int:
    """Replace the task's pool with the prompts of ``path`` (checked as the task's prompts are)."""
    prompts = task.load_prompts(path)
    _store(settings, task, prompts, replace=True)
    return len(prompts)


def _read(settings: Settings, task: Task) -> list[Prompt]:
    with db.session_scope(settings) as session:
        rows = session.execute(
            select(HiddenPrompt.prompt_id, HiddenPrompt.tokens)
            .where(HiddenPrompt.task == task.name)
            .order_by(HiddenPrompt.id)
        ).all()
    return [Prompt(prompt_id, "", tuple(int(t) for t in tokens)) for prompt_id, tokens in rows]


def _store(settings: Settings, task: Task, prompts: Sequence[Prompt], *, replace: bool) -> None:
    with db.session_scope(settings) as session:
        if replace:
            session.execute(delete(HiddenPrompt).where(HiddenPrompt.task == task.name))
        session.add_all(
            HiddenPrompt(task=task.name, prompt_id=p.id, tokens=list(p.tokens)) for p in prompts
        )


def export_pool(settings: Settings, task: Task, path: Path) -> int:
    """Write the pool as JSON lines of token ids (for organisers: backups, other servers)."""
    prompts = _read(settings, task)
    with path.open("w", encoding="utf-8") as fh:
        for p in prompts:
            fh.write(json.dumps({"id": p.id, "tokens": list(p.tokens)}) + "\n")
    return len(prompts)

"""The hidden prompt pool lives in the database: seeded once, shared by every worker, drawn from
afresh by each evaluation, never shipped in the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from edc.config import Settings
from edc.harness.draw import EvaluationSecret, draw_prompts
from edc.tasks.pool import export_pool, hidden_pool, import_pool, pool_size
from edc.tasks.task import Task, bundled_task_dir
from tests.harness.conftest import write_task

EDC = str(Path(sys.executable).with_name("edc"))


def test_the_package_ships_no_hidden_prompts() -> None:
    prompts = bundled_task_dir() / "prompts"
    assert sorted(p.name for p in prompts.iterdir()) == ["public.jsonl"]
    assert Task.load(bundled_task_dir()).prompt_sources.hidden_source == "stdlib"


def test_the_bundled_pool_is_drawn_once_with_secret_randomness(settings: Settings) -> None:
    task = Task.load(bundled_task_dir())
    first = hidden_pool(settings, task)
    assert len(first) == 4096 == pool_size(settings, task)
    assert len({p.tokens for p in first}) == len(first)
    public = {p.tokens for p in task.public_prompts()}
    assert not public & {p.tokens for p in first}
    # Kept: the second reader gets the same pool, not a new one.
    assert [p.tokens for p in hidden_pool(settings, task)] == [p.tokens for p in first]
    # Another server draws another pool: nothing regenerates this one.
    assert {p.tokens for p in task.new_hidden_pool()} != {p.tokens for p in first}


def test_workers_seeding_at_once_share_one_pool(settings: Settings, tmp_path: Path) -> None:
    task = write_task(tmp_path / "task")
    pools: list[list[tuple[int, ...]]] = []
    errors: list[BaseException] = []

    def seed() -> None:
        try:
            pools.append([p.tokens for p in hidden_pool(settings, task)])
        except BaseException as exc:  # a failure must fail the test, not vanish in a thread
            errors.append(exc)

    threads = [threading.Thread(target=seed) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(pools) == 4 and all(p == pools[0] for p in pools)
    assert pool_size(settings, task) == len(task.hidden_prompts())


def test_an_organiser_replaces_and_exports_the_pool(settings: Settings, tmp_path: Path) -> None:
    task = write_task(tmp_path / "task")
    hidden_pool(settings, task)
    new = tmp_path / "new.jsonl"
    new.write_text(
        "".join(json.dumps({"id": f"n{i}", "text": f"def f{i}(x):"}) + "\n" for i in range(9))
    )
    assert import_pool(settings, task, new) == 9
    assert [p.id for p in hidden_pool(settings, task)] == [f"n{i}" for i in range(9)]
    out = tmp_path / "out.jsonl"
    assert export_pool(settings, task, out) == 9
    assert json.loads(out.read_text().splitlines()[0])["id"] == "n0"


def test_two_evaluations_draw_different_prompts(settings: Settings) -> None:
    pool = hidden_pool(settings, Task.load(bundled_task_dir()))
    a = draw_prompts(pool, needed=56, secret=EvaluationSecret.fresh())
    b = draw_prompts(pool, needed=56, secret=EvaluationSecret.fresh())
    assert len({p.id for p in a}) == 56
    # Two draws of 56 from 4096 share ~0.8 prompts on average.
    assert len({p.id for p in a} & {p.id for p in b}) < 10


def test_the_cli_imports_and_exports_the_pool(sqlite_settings: Settings, tmp_path: Path) -> None:
    task = write_task(tmp_path / "task")
    env = {
        **os.environ,
        "EDC_DATA_DIR": str(sqlite_settings.data_dir),
        "EDC_TASK_DIR": str(task.root),
    }
    good = tmp_path / "pool.jsonl"
    good.write_text(
        "".join(json.dumps({"id": f"g{i}", "text": "import os\n"}) + "\n" for i in range(3))
    )
    done = subprocess.run(
        [EDC, "task", "import-pool", str(good)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "3 prompts" in done.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    refused = subprocess.run(
        [EDC, "task", "import-pool", str(bad)], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "neither" in refused.stderr
    # The refused file changed nothing.
    out = tmp_path / "out.jsonl"
    done = subprocess.run(
        [EDC, "task", "export-pool", str(out)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["g0", "g1", "g2"]

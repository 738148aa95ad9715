"""``edc task init``: from a checkpoint, or ``--synthetic NAME`` with nothing downloaded; a mix of
the two, or neither, is refused with what to give."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from edc.cli.main import app
from edc.tasks.task import Task, bundled_task_dir


def test_a_small_synthetic_task_is_built_and_loads(tmp_path: Path) -> None:
    out = tmp_path / "task"
    argv = ["task", "init", "--small", "--out", str(out), "--synthetic"]
    result = CliRunner().invoke(app, [*argv, "ci-synthetic"])
    assert result.exit_code == 0, result.output
    task = Task.load(out)
    assert task.name == "ci-synthetic" and task.spec.model.tokenizer == "ids"

    again = CliRunner().invoke(
        app, ["task", "init", "--synthetic", "x", "--small", "--out", str(out)]
    )
    assert again.exit_code == 2 and "not empty" in again.output


def test_synthetic_and_a_checkpoint_together_or_neither_are_refused(tmp_path: Path) -> None:
    model = str(bundled_task_dir() / "model")
    both = ["task", "init", "--synthetic", "x", "--model", model, "--out", str(tmp_path / "a")]
    result = CliRunner().invoke(app, both)
    assert result.exit_code == 2 and "--synthetic builds its own model" in result.output
    neither = CliRunner().invoke(app, ["task", "init", "--out", str(tmp_path / "b")])
    assert neither.exit_code == 2 and "--synthetic NAME" in neither.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

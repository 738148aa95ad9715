"""A decoder runtime environment with torch, built once per test session (~20 s from the local
wheel), and a copy of the bundled task that names it."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from edc.sandbox.runtime import build_environment
from edc.tasks.task import bundled_task_dir
from tests.support.platform import copy_of_task

TORCH_REQUIREMENT = "torch==2.13.0"


def build_torch_environment(folder: Path) -> Path:
    build_environment(folder, (TORCH_REQUIREMENT,), echo=lambda _line: None)
    return folder


def task_with_runtime(folder: Path, runtime: dict[str, Any], source: Path | None = None) -> Path:
    """A copy of ``source`` (default: the bundled task) naming ``runtime``."""
    return add_runtime(copy_of_task(folder, source or bundled_task_dir()), runtime)


def add_runtime(task_dir: Path, runtime: dict[str, Any]) -> Path:
    """Give the task at ``task_dir`` the [runtime] section ``runtime`` (it must have none)."""
    toml = task_dir / "task.toml"
    text = toml.read_text()
    if "runtime" in tomllib.loads(text):
        raise ValueError("the task names a runtime already; write this one by hand")
    # JSON strings and lists of strings are valid TOML values.
    lines = ["", "[runtime]", *(f"{key} = {json.dumps(value)}" for key, value in runtime.items())]
    toml.write_text(text + "\n".join(lines) + "\n")
    return task_dir

"""The layering rule of docs/architecture.md, as import-linter contracts over the real import graph.

The second test breaks the rule on a copy of the package, so the check is known to fail when it
should (a contract that cannot fail would pass on anything). The third keeps the core contract's
hand-written list of root modules equal to the root's modules, so a new one cannot escape it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache", str(REPO / "pyproject.toml")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_package_keeps_its_layers() -> None:
    result = lint_imports(REPO / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_a_lower_room_importing_an_upper_one_is_caught(tmp_path: Path) -> None:
    copy = tmp_path / "edc"
    shutil.copytree(REPO / "src" / "edc", copy, ignore=shutil.ignore_patterns("tiny", "static"))
    # Hidden inside a function, as the old breaks were: the graph still sees it.
    with (copy / "tasks" / "corpus.py").open("a") as fh:
        fh.write("\n\ndef _sneaky() -> None:\n    from edc.harness import verify  # noqa: F401\n")
    with (copy / "status.py").open("a") as fh:
        fh.write("\n\nfrom edc.services import leaderboard  # noqa: E402,F401\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "edc.tasks.corpus -> edc.harness.verify" in result.stdout, result.stdout
    assert "edc.status -> edc.services.leaderboard" in result.stdout, result.stdout
    assert "0 kept, 2 broken" in result.stdout


def test_the_core_contract_names_every_module_at_the_root() -> None:
    with (REPO / "pyproject.toml").open("rb") as fh:
        contracts = tomllib.load(fh)["tool"]["importlinter"]["contracts"]
    (core,) = [c for c in contracts if c["name"] == "The core at the package root imports no room"]
    at_the_root = {
        f"edc.{path.stem}"
        for path in (REPO / "src" / "edc").glob("*.py")
        if path.stem not in {"__init__", "__main__"}
    }
    assert set(core["source_modules"]) == at_the_root

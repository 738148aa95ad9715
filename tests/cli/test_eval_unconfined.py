"""``edc eval --sandbox none``: one's own code evaluated without a sandbox, said plainly; never a
worker's choice."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from edc.cli.main import app
from edc.config import Settings, get_settings
from edc.sandbox.backends import BACKENDS
from edc.tasks.task import bundled_task_dir
from tests.support.platform import quick_task

REPO = Path(__file__).resolve().parents[2]


def test_eval_without_a_sandbox_runs_and_says_so(tmp_path: Path) -> None:
    get_settings.cache_clear()
    env = {"EDC_DATA_DIR": str(tmp_path / "data"), "EDC_PUBLIC_CHECK": "false"}
    task = quick_task(tmp_path / "task")
    # A task whose hidden prompts are on this machine: unconfined code could read their file,
    # so it is run on the public ones only.
    (task / "prompts").unlink()
    shutil.copytree(bundled_task_dir() / "prompts", task / "prompts")
    public = (task / "prompts" / "public.jsonl").read_text()
    (task / "prompts" / "hidden.jsonl").write_text(public.replace('"id": "', '"id": "h-'))
    argv = ["eval", str(REPO / "examples" / "kvcache"), "--task", str(task), "--sandbox", "none"]
    result = CliRunner().invoke(app, [*argv, "--json"], env=env)
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["status"] == "completed"
    assert report["prompts"] == "public"
    assert report["sandbox"].startswith("no sandbox (edc eval --sandbox none)")
    assert report["metrics"]["correct"] is True
    assert report["metrics"]["exact_match_rate"] == 1.0
    assert "No sandbox" in result.stderr


def test_a_worker_can_never_run_unsandboxed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "none" not in BACKENDS
    monkeypatch.setitem(os.environ, "EDC_SANDBOX", "none")
    with pytest.raises(ValidationError, match="'auto', 'bwrap' or 'docker'"):
        Settings()

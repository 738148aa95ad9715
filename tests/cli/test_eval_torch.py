"""``examples/torch`` through ``edc eval`` on CPU: it passes where the task's runtime offers torch,
and fails, naming torch, where it does not."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edc.cli.main import app
from edc.config import get_settings
from tests.support.platform import quick_task
from tests.support.runtime import add_runtime

REPO = Path(__file__).resolve().parents[2]
TORCH_EXAMPLE = REPO / "examples" / "torch"


def _eval(task: Path, tmp_path: Path) -> tuple[int, dict[str, object], str]:
    get_settings.cache_clear()
    env = {"EDC_DATA_DIR": str(tmp_path / "data"), "EDC_SANDBOX": "bwrap"}
    argv = ["eval", str(TORCH_EXAMPLE), "--task", str(task), "--json"]
    result = CliRunner().invoke(app, argv, env=env)
    get_settings.cache_clear()
    report = json.loads(result.stdout[result.stdout.index("{") :])
    return result.exit_code, report, result.output


def test_the_torch_example_passes_with_a_torch_runtime(
    tmp_path: Path, torch_environment: Path
) -> None:
    task = add_runtime(
        quick_task(tmp_path / "task"),
        {"imports": ["numpy", "torch"], "env": str(torch_environment)},
    )
    code, report, output = _eval(task, tmp_path)
    assert code == 0, output
    metrics = report["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["correct"] is True and metrics["exact_match_rate"] == 1.0
    assert str(torch_environment) in str(report["sandbox"])


def test_the_torch_example_fails_naming_torch_where_the_runtime_lacks_it(tmp_path: Path) -> None:
    code, report, output = _eval(quick_task(tmp_path / "task"), tmp_path)
    assert code == 1, output
    assert report["status"] == "failed"
    assert "No module named 'torch'" in json.dumps(report)

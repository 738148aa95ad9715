"""``edc eval``'s implementation: a directory or a zip in, a table or JSON out, an exit code."""

import json
import zipfile
from pathlib import Path

import pytest

from edc.cli.local_eval import EXIT_CANNOT_RUN, EXIT_OK, EXIT_SUBMISSION_FAILED, run_eval
from edc.config import Settings
from edc.tasks.task import Task
from tests.harness.conftest import EXAMPLES, write_native


def test_a_directory_as_json(
    small_task: Task, harness_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_eval(EXAMPLES / "kvcache", small_task.root, True, harness_settings)
    out = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK
    assert out["status"] == "completed"
    assert out["metrics"]["correct"] is True
    assert out["metrics"]["latency"]["tpot_ms"]["p50"] > 0


def test_a_zip_as_a_table(
    small_task: Task,
    harness_settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    archive = tmp_path / "submission.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(EXAMPLES / "batched" / "submission.py", "mine/submission.py")
    code = run_eval(archive, small_task.root, False, harness_settings)
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert "e2e_per_token_ms" in out and "score" in out and "roofline" in out


def test_a_failing_submission_exits_non_zero(
    small_task: Task,
    harness_settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    submission = write_native(tmp_path / "sub", 'send({"op": "ready"})\nsys.exit(4)\n')
    code = run_eval(submission, small_task.root, True, harness_settings)
    out = json.loads(capsys.readouterr().out)
    assert code == EXIT_SUBMISSION_FAILED
    assert out["status"] == "failed"
    assert out["reason"] == "crashed"
    assert "exited with code 4" in out["message"]


def test_a_bad_zip_is_the_submission_s_fault(
    small_task: Task,
    harness_settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    archive = tmp_path / "nothing.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("README.md", "no entry point here")
    code = run_eval(archive, small_task.root, False, harness_settings)
    out = capsys.readouterr().out
    assert code == EXIT_SUBMISSION_FAILED
    assert "invalid_archive" in out


def test_nothing_to_evaluate(
    small_task: Task,
    harness_settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run_eval(tmp_path / "missing", small_task.root, True, harness_settings)
    assert code == EXIT_CANNOT_RUN
    assert json.loads(capsys.readouterr().out)["status"] == "error"


def test_an_unusable_task(
    harness_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_eval(EXAMPLES / "kvcache", tmp_path, False, harness_settings)
    assert code == EXIT_CANNOT_RUN
    assert "task.toml" in capsys.readouterr().err

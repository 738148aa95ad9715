"""``scripts/gpu-check.sh --cpu``: the GPU check's every step, on CPU with the small synthetic task,
through the real sandbox with a torch runtime."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_the_gpu_check_runs_end_to_end_on_cpu(tmp_path: Path, torch_environment: Path) -> None:
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "EDC_CHECK_DIR": str(tmp_path / "check"),
        "EDC_CHECK_RUNTIME": str(torch_environment),
        "EDC_CHECK_SANDBOX": "bwrap",
    }
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu-check.sh"), "--cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "status: completed" in out
    assert "correct: True" in out and "exact match" in out
    assert f"runtime {torch_environment}" in out  # the sandbox that ran, with the torch runtime
    assert "TPOT / floor = " in out
    for step in ("build the task", "runtime with torch", "edc eval examples/torch", "total"):
        assert any(line.startswith(step) and line.endswith(" s") for line in out.splitlines()), step

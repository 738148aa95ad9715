"""`edc up` for real: a subprocess on a free port, uploads over HTTP, polled to the end."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.running import RunningPlatform, start_platform, stop_platform, zip_of

pytestmark = pytest.mark.slow


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path)
    yield running
    if running.process.poll() is None:
        stop_platform(running)


def test_upload_runs_to_completion_with_measured_figures(platform: RunningPlatform) -> None:
    code = "import sys\nprint('hello from the sandbox')\nprint('to stderr', file=sys.stderr)\n"
    response = platform.upload("ok.zip", zip_of({"submission.py": code}))
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] == "queued"

    final = platform.wait_final(created["id"])
    assert final["status"] == "completed", final
    metrics = final["result_metrics"]
    assert metrics["exit_code"] == 0
    assert 0 < metrics["wall_s"] < 30
    assert final["started_at"] and final["finished_at"]
    assert final["worker_id"]
    # Nothing of the run is left on disk.
    assert list((platform.data_dir / "runs").iterdir()) == []


def test_non_zero_exit_ends_failed_with_code_and_logs(platform: RunningPlatform) -> None:
    code = "import sys\nprint('about to fail', file=sys.stderr)\nsys.exit(3)\n"
    response = platform.upload("bad.zip", zip_of({"pkg/submission.py": code}))
    assert response.status_code == 201, response.text
    final = platform.wait_final(response.json()["id"])
    assert final["status"] == "failed"
    assert final["failure_reason"] == "crashed"
    assert "code 3" in final["failure_message"]
    assert final["result_metrics"] is None or final["result_metrics"].get("exit_code") in (3, None)


def test_sigterm_stops_every_child(tmp_path: Path) -> None:
    running = start_platform(tmp_path, workers=2)
    port = int(running.url.rsplit(":", 1)[1])
    children = psutil.Process(running.process.pid).children(recursive=True)
    # The portal and two workers, plus the embedded Redis server, which runs daemonised.
    assert len(children) >= 3, children
    data_dir = str((tmp_path / "data").resolve())
    children += [
        p
        for p in psutil.process_iter(["name", "cwd"])
        if p.info["name"] == "redis-server" and p.info["cwd"] == data_dir
    ]
    assert len(children) >= 4, children
    output = stop_platform(running)
    assert running.process.returncode == 0, output
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the portal still listens after stop"
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert alive == [], f"still running after stop: {alive}"

"""`edc up` for real: a subprocess on a free port, uploads over HTTP, polled to the end."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def zip_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


class RunningPlatform:
    def __init__(self, process: subprocess.Popen[bytes], url: str, data_dir: Path) -> None:
        self.process = process
        self.url = url
        self.data_dir = data_dir
        self.client = httpx.Client(base_url=url, timeout=30)

    def upload(self, name: str, payload: bytes) -> httpx.Response:
        return self.client.post(
            "/api/v1/submissions", files={"file": (name, payload, "application/zip")}
        )

    def wait_final(self, submission_id: int, timeout_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            body: dict[str, Any] = self.client.get(f"/api/v1/submissions/{submission_id}").json()
            if body["status"] in ("completed", "failed", "cancelled"):
                return body
            time.sleep(0.2)
        raise AssertionError(f"submission {submission_id} did not finish: {body}")


def start_platform(
    tmp_path: Path, *extra_env: tuple[str, str], workers: int = 1
) -> RunningPlatform:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDC_")}
    env.update({"EDC_DATA_DIR": str(tmp_path / "data"), "EDC_SANDBOX": "bwrap"})
    env.update(dict(extra_env))
    process = subprocess.Popen(
        [sys.executable, "-m", "edc", "up", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = process.stdout.read().decode() if process.stdout else ""
            raise AssertionError(f"edc up exited early with {process.returncode}:\n{out}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return RunningPlatform(process, url, tmp_path / "data")
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("edc up did not become ready in 60 s")


def stop_platform(platform: RunningPlatform) -> str:
    platform.client.close()
    platform.process.send_signal(signal.SIGTERM)
    out, _ = platform.process.communicate(timeout=40)
    return out.decode(errors="replace")


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

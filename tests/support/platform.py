"""Helpers for end-to-end tests: the real `edc up` as a subprocess, driven over HTTP."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def portal_process(
    env: dict[str, str],
    log: Path,
    *,
    ready: Callable[[subprocess.Popen[bytes]], bool] = lambda _: True,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`edc portal` on a free port with ``env`` (its output in ``log``), once /healthz answers and
    ``ready`` holds; yields its URL and process, and stops it after."""
    port = free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "edc", "portal", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not (answers(url) and ready(process)):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the portal did not start"
            time.sleep(0.2)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


def answers(url: str) -> bool:
    """Whether the portal at ``url`` answers its health check."""
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


REPO = Path(__file__).resolve().parents[2]
KVCACHE = REPO / "examples" / "kvcache" / "submission.py"
BUNDLED_TASK = REPO / "src" / "edc" / "tasks" / "tiny"


def copy_of_task(folder: Path, source: Path = BUNDLED_TASK, *, leave_out: str = "") -> Path:
    """A copy of the task at ``source`` (default: the bundled one) at ``folder``, without
    ``leave_out`` (a name) nor any worker self-test's canary file in it at that moment: a test
    beside this one may be checking its sandbox against the bundled task, and its canary may go
    while the copy is made."""
    from edc.worker.canary import CANARY_PREFIX  # here: this module is imported without edc too

    patterns = [f"{CANARY_PREFIX}*", *([leave_out] if leave_out else [])]
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns(*patterns))
    return folder


def quick_task(directory: Path, *, max_new_tokens: int = 16) -> Path:
    """The bundled task with few, short requests and no serving sweep, so end-to-end runs take
    seconds."""
    text = (BUNDLED_TASK / "task.toml").read_text()
    text = text.replace("max_new_tokens = 64", f"max_new_tokens = {max_new_tokens}")
    text = text[: text.index("[serving]")] + text[text.index("[ranking]") :]
    start = text.index("[requests]")
    end = text.index("[limits]")
    text = (
        text[:start]
        + "[requests]\nwarmup = 1\ntimed = 2\nthroughput = 2\nrepeats = 1\n\n"
        + text[end:]
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "task.toml").write_text(text)
    for part in ("model", "prompts"):
        if not (directory / part).exists():
            (directory / part).symlink_to(BUNDLED_TASK / part)
    return directory


def kvcache_zip(*, load_delay_s: float = 0.0) -> bytes:
    """The kvcache example, optionally sleeping while it loads (to be caught mid-run)."""
    code = KVCACHE.read_text()
    if load_delay_s:
        code = code.replace(
            "    def __init__(self, model_dir: str) -> None:\n        c = load_config(model_dir)",
            f"    def __init__(self, model_dir: str) -> None:\n        import time\n"
            f"        time.sleep({load_delay_s})\n        c = load_config(model_dir)",
            1,
        )
        assert "time.sleep" in code
    return zip_of({"submission.py": code})


def zip_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


class RunningPlatform:
    def __init__(
        self, process: subprocess.Popen[bytes], url: str, data_dir: Path, token: str
    ) -> None:
        self.process = process
        self.url = url
        self.data_dir = data_dir
        # Uploads belong to a participant: the client carries the API token of one.
        self.token = token
        self.client = httpx.Client(
            base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"}
        )
        self.log_path = data_dir.parent / "edc-up.log"

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
    tmp_path: Path,
    *extra_env: tuple[str, str],
    workers: int = 1,
    up_args: tuple[str, ...] = (),
    user: str = "tester",
) -> RunningPlatform:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDC_")}
    env.update(
        {
            "EDC_DATA_DIR": str(tmp_path / "data"),
            "EDC_SANDBOX": "bwrap",
            "EDC_TASK_DIR": str(quick_task(tmp_path / "task")),
            # Tests upload in bursts; the limits have their own tests.
            "EDC_MAX_QUEUED_PER_USER": "1000",
            "EDC_SUBMISSIONS_PER_DAY": "1000",
            # Its baseline run before the first job has a test of its own.
            "EDC_DRIFT_WATCH": "false",
        }
    )
    env.update(dict(extra_env))
    # A file, not a pipe: nobody reads a pipe during the test, and a full one blocks the platform.
    log = (tmp_path / "edc-up.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edc",
            "up",
            "--port",
            str(port),
            "--workers",
            str(workers),
            *up_args,
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    STARTED.append((process, (tmp_path / "data").resolve()))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = (tmp_path / "edc-up.log").read_text(errors="replace")
            raise AssertionError(f"edc up exited early with {process.returncode}:\n{out}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                token = create_user(env, user)
                return RunningPlatform(process, url, tmp_path / "data", token)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("edc up did not become ready in 60 s")


def create_user(env: dict[str, str], name: str, *, admin: bool = False) -> str:
    """`edc user create NAME` against the platform's database; returns the printed token."""
    args = [sys.executable, "-m", "edc", "user", "create", name] + (["--admin"] if admin else [])
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"edc user create failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout.strip().splitlines()[-1]


def stop_platform(platform: RunningPlatform) -> str:
    """SIGTERM `edc up` as an operator would; returns everything it logged."""
    platform.client.close()
    if platform.process.poll() is None:
        platform.process.send_signal(signal.SIGTERM)
        platform.process.wait(timeout=40)
    return platform.log_path.read_text(errors="replace")


# Every `edc up` a test started; tests/system/conftest.py kills what a failed test left running.
STARTED: list[tuple[subprocess.Popen[bytes], Path]] = []


def kill_leftovers() -> None:
    """Kill what a test left running: `edc up`, its children, and its embedded Redis (which runs
    daemonised, so it is found by its working directory, the platform's data directory)."""
    while STARTED:
        process, data_dir = STARTED.pop()
        members = []
        if process.poll() is None:
            members = [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]
        members += [
            p
            for p in psutil.process_iter(["name", "cwd"])
            if p.info["name"] == "redis-server" and p.info["cwd"] == str(data_dir)
        ]
        for member in members:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        if process.poll() is None:
            process.wait()

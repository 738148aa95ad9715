"""The sandbox contract, checked on every backend in the registry with hostile programs.

A backend that cannot run here is skipped with its reason, except in CI (``CI=true``), where every
backend must run for real. The programs live in ``hostile/``; each test copies the one it needs into
a fresh submission directory and runs it with the backend's own Python.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edc.config import Settings
from edc.sandbox.backends import BACKENDS, backend_class
from edc.sandbox.base import (
    CHANNEL_DIR,
    MODEL_DIR,
    SUBMISSION_DIR,
    ExitKind,
    Mount,
    Sandbox,
    SandboxResult,
    SandboxSpec,
)

HOSTILE = Path(__file__).parent / "hostile"
REPO = Path(__file__).resolve().parents[2]
# What a backend may add to ``spec.env``: a minimal PATH/HOME/LANG and what the runtime sets.
# PYTHONPATH: bubblewrap's way to the decoder's libraries (/opt/edc-libs).
ALLOWED_EXTRA_ENV = {"PATH", "HOME", "LANG", "PWD", "HOSTNAME", "LC_CTYPE", "TERM", "PYTHONPATH"}
MIB = 1024 * 1024


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def sandbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    name = str(request.param)
    try:
        cls = backend_class(name)
        reason = cls.unavailable_reason()
    except ImportError as exc:
        reason = f"the backend cannot be imported: {exc}"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the {name} sandbox for real, but: {reason}")
        pytest.skip(f"{name} sandbox unavailable: {reason}")
    sandbox = cls.from_settings(Settings())
    # A first run, so what a backend sets up once per process is there before the tests look.
    warm_up = tmp_path_factory.mktemp(f"warm-up-{name}")
    warm_up.chmod(0o755)
    result = sandbox.run(SandboxSpec(argv=(sandbox.python, "-c", "pass"), submission_dir=warm_up))
    assert result.ok, result
    return sandbox


@pytest.fixture
def submission(tmp_path: Path) -> Path:
    path = tmp_path / "submission"
    path.mkdir()
    path.chmod(0o755)  # sandboxes may run as an unprivileged uid
    return path


def add_program(submission: Path, name: str) -> str:
    shutil.copy(HOSTILE / name, submission / name)
    (submission / name).chmod(0o644)
    return name


def spec_for(
    sandbox: Sandbox, submission: Path, program: str, *args: str, **overrides: Any
) -> SandboxSpec:
    defaults: dict[str, Any] = {
        "wall_timeout_s": 20.0,
        "memory_mb": 256,
        "pids_max": 64,
        "cpus": 1.0,
        "scratch_mb": 16,
        "output_cap_bytes": 64 * 1024,
        "labels": {"test": "contract"},
    }
    defaults.update(overrides)
    add_program(submission, program)
    return SandboxSpec(argv=(sandbox.python, program, *args), submission_dir=submission, **defaults)


def interpreter_path_names(directory: Path) -> set[str]:
    """Entries of ``directory`` leading to this interpreter's folders (some backends bind them)."""
    names = set()
    for prefix in (Path(sys.prefix), Path(sys.base_prefix)):
        if directory in prefix.parents:
            names.add(prefix.relative_to(directory).parts[0])
    return names


def run_json(sandbox: Sandbox, spec: SandboxSpec) -> tuple[SandboxResult, Any]:
    result = sandbox.run(spec)
    assert result.exit_kind is ExitKind.EXITED, result
    lines = result.stdout.strip().splitlines()
    assert lines, result
    return result, json.loads(lines[-1])


def test_exit_code_and_both_streams_are_captured(sandbox: Sandbox, submission: Path) -> None:
    (submission / "data.txt").write_text("mine\n")
    (submission / "data.txt").chmod(0o644)
    result = sandbox.run(spec_for(sandbox, submission, "hello.py", "7"))
    assert result.exit_kind is ExitKind.EXITED
    assert result.exit_code == 7
    assert not result.ok
    assert "hello stdout" in result.stdout
    assert "hello stderr" in result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {"cwd": SUBMISSION_DIR, "files": ["data.txt", "hello.py"]}
    assert not result.stdout_truncated and not result.stderr_truncated
    assert 0 < result.wall_s < 20

    assert sandbox.run(spec_for(sandbox, submission, "hello.py", "0")).ok


def test_environment_is_exactly_the_spec(
    sandbox: Sandbox, submission: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("EDC_SECRET_KEY", secret)
    monkeypatch.setenv("EDC_DATABASE_URL", f"postgresql://edc:{secret}@127.0.0.1/edc")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    given = {"EDC_TASK": "tiny", "OMP_NUM_THREADS": "1"}

    _, env = run_json(sandbox, spec_for(sandbox, submission, "environment.py", env=given))

    assert all(secret not in value for value in env.values())
    assert {k: env[k] for k in given} == given
    assert set(env) - set(given) <= ALLOWED_EXTRA_ENV
    assert env.get("HOME") and env.get("PATH")


def test_no_network_not_even_the_hosts_loopback(sandbox: Sandbox, submission: Path) -> None:
    # A service of our own on the host's loopback, so the check cannot pass by accident.
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    accepted: list[object] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                accepted.append(listener.accept())
            except TimeoutError:
                continue

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        spec = spec_for(sandbox, submission, "network.py", "6379", "5432", str(port))
        _, report = run_json(sandbox, spec)
    finally:
        done.set()
        watcher.join()
        listener.close()

    assert accepted == []
    assert set(report["connect"].values()) <= {"ECONNREFUSED", "ENETUNREACH"}, report
    assert report["if_nameindex"] == ["lo"]
    assert report["proc_net_dev"] == ["lo"]
    assert report["routes"] == []


def test_only_scratch_and_writable_mounts_can_be_written(
    sandbox: Sandbox, submission: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    model.mkdir(mode=0o755)
    (model / "weights.bin").write_bytes(b"weights")
    (model / "weights.bin").chmod(0o644)
    channel = tmp_path / "channel"
    channel.mkdir()
    channel.chmod(0o777)
    mounts = (Mount(model, MODEL_DIR), Mount(channel, CHANNEL_DIR, writable=True))
    targets = ["/submission/x", "/usr/x", "/etc/x", "/x", "/tmp/x", f"{MODEL_DIR}/x"]
    ops = [f"write:{t}" for t in targets]
    ops += [f"write:{CHANNEL_DIR}/x", f"read:{MODEL_DIR}/weights.bin"]

    _, report = run_json(sandbox, spec_for(sandbox, submission, "files.py", *ops, mounts=mounts))

    assert report.pop("write:/tmp/x") == "ok"
    assert report.pop(f"write:{CHANNEL_DIR}/x") == "ok"
    assert report.pop(f"read:{MODEL_DIR}/weights.bin") == {"content": "weights"}
    assert all(outcome in ("EROFS", "EACCES", "EPERM") for outcome in report.values()), report
    assert (channel / "x").read_text() == "written from inside the sandbox\n"
    assert sorted(p.name for p in model.iterdir()) == ["weights.bin"]
    assert sorted(p.name for p in submission.iterdir()) == ["files.py"]


def test_filling_the_scratch_stops_at_its_size(
    sandbox: Sandbox, submission: Path, tmp_path: Path
) -> None:
    _, report = run_json(sandbox, spec_for(sandbox, submission, "fill_disk.py", scratch_mb=8))

    assert report["error"] == "ENOSPC"
    assert 4 * MIB <= report["written"] <= 8 * MIB
    (tmp_path / "host-still-writable").write_text("fine")  # the host's disk is untouched


def test_fork_bomb_is_contained(sandbox: Sandbox, submission: Path) -> None:
    spec = spec_for(sandbox, submission, "fork_bomb.py", pids_max=32, wall_timeout_s=15.0)

    result, report = run_json(sandbox, spec)

    assert report["refused"], report
    assert report["made"] < 32
    assert result.wall_s < 15
    # The worker can still start processes and the next run works.
    assert sandbox.run(spec_for(sandbox, submission, "hello.py")).ok


def test_memory_hog_ends_with_memory_limit(sandbox: Sandbox, submission: Path) -> None:
    result = sandbox.run(spec_for(sandbox, submission, "memory_hog.py", memory_mb=128))

    assert result.exit_kind is ExitKind.MEMORY_LIMIT, result
    assert "nobody stopped me" not in result.stdout


@pytest.mark.timing  # the wall time measured against the limit
def test_endless_cpu_spin_times_out_at_the_wall_limit(sandbox: Sandbox, submission: Path) -> None:
    result = sandbox.run(spec_for(sandbox, submission, "cpu_spin.py", wall_timeout_s=1.5))

    assert result.exit_kind is ExitKind.TIMEOUT
    assert result.exit_code is None
    assert 1.5 <= result.wall_s < 4.5


def test_output_flood_is_capped(sandbox: Sandbox, submission: Path) -> None:
    spec = spec_for(sandbox, submission, "flood.py", "16", output_cap_bytes=4096)

    result = sandbox.run(spec)

    assert result.ok, result.stderr[:200]
    assert result.stdout_truncated and result.stderr_truncated
    assert len(result.stdout.encode()) == 4096
    assert len(result.stderr.encode()) == 4096
    assert set(result.stdout) <= {"y", "\n"}


def test_host_files_are_out_of_reach(
    sandbox: Sandbox, submission: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    marker = uuid.uuid4().hex
    other_run = tmp_path_factory.mktemp("other-submission") / "upload.zip"
    other_run.write_text(f"another participant's upload {marker}")
    data_dir = tmp_path_factory.mktemp("data")
    (data_dir / "edc.sqlite3").write_text(f"the platform's database {marker}")
    planted = [other_run, data_dir / "edc.sqlite3"]
    root_probe = Path("/root") / f".edc-sandbox-probe-{marker}"
    if os.access("/root", os.W_OK):
        root_probe.write_text(f"root's file {marker}")
        planted.append(root_probe)
    repo_files = [REPO / "pyproject.toml", REPO / "src" / "edc" / "config.py", Path(__file__)]
    ops = [f"read:{p}" for p in [*planted, *repo_files]]
    ops += [f"list:{data_dir}", f"list:{REPO}", f"list:{REPO / 'src'}"]
    try:
        _, report = run_json(sandbox, spec_for(sandbox, submission, "files.py", *ops))
    finally:
        root_probe.unlink(missing_ok=True)

    assert marker not in json.dumps(list(report.values()))
    for op, outcome in report.items():
        kind, _, path = op.partition(":")
        if kind == "read" or isinstance(outcome, str):
            assert isinstance(outcome, str), f"{op} succeeded inside the sandbox: {outcome}"
            continue
        # A listing may only show the way to the interpreter's own folders.
        shown = set(outcome["entries"]) & {p.name for p in Path(path).iterdir()}
        assert shown <= interpreter_path_names(Path(path)), f"{op} shows {shown}"


def test_signalling_the_parent_or_everyone_leaves_the_worker_alone(
    sandbox: Sandbox, submission: Path
) -> None:
    marker = f"edc-victim-{uuid.uuid4().hex}"
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        spec = spec_for(sandbox, submission, "signal_parent.py", str(victim.pid), marker)
        result = sandbox.run(spec)
        assert victim.poll() is None, "a host process was killed from inside the sandbox"
    finally:
        victim.kill()
        victim.wait()

    assert result.exit_kind is ExitKind.EXITED, result
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["victim_visible"] is False
    assert report["victim"] == "ProcessLookupError"
    # The worker (this process) is still here and the next run works.
    assert sandbox.run(spec_for(sandbox, submission, "hello.py")).ok


def test_daemon_does_not_outlive_the_run(
    sandbox: Sandbox, submission: Path, tmp_path: Path
) -> None:
    channel = tmp_path / "channel"
    channel.mkdir()
    channel.chmod(0o777)
    heartbeat = channel / "heartbeat"
    spec = spec_for(
        sandbox,
        submission,
        "daemon.py",
        f"{CHANNEL_DIR}/heartbeat",
        mounts=(Mount(channel, CHANNEL_DIR, writable=True),),
    )

    result = sandbox.run(spec)

    assert result.ok, result
    assert "daemonized" in result.stdout
    beats = heartbeat.stat().st_size
    time.sleep(0.5)
    assert heartbeat.stat().st_size == beats, "the daemon is still beating after the run"


def test_kill_from_another_thread_ends_the_run_promptly(sandbox: Sandbox, submission: Path) -> None:
    process = sandbox.start(spec_for(sandbox, submission, "sleeper.py", "60", wall_timeout_s=30))
    assert process.poll() is True
    killer = threading.Timer(0.5, process.kill)
    killer.start()
    try:
        result = process.wait()
    finally:
        killer.cancel()

    assert result.exit_kind is ExitKind.KILLED
    assert result.wall_s < 5
    assert process.poll() is False
    process.kill()  # idempotent once it is over
    assert process.wait() == result


def test_peak_memory_is_measured_when_reported(sandbox: Sandbox, submission: Path) -> None:
    result = sandbox.run(spec_for(sandbox, submission, "resident.py", "64"))

    assert result.ok, result
    if result.peak_memory_bytes is not None:
        assert 64 * MIB <= result.peak_memory_bytes < 256 * MIB


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    """A backend's reader threads must be gone once ``wait`` returns."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stray = [t for t in set(threading.enumerate()) - before if t.is_alive()]
        if not stray:
            return
        time.sleep(0.05)
    pytest.fail(f"threads left running after the test: {stray}")

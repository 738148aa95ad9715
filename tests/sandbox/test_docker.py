"""Docker-specific behaviour of the Docker backend, against the real engine.

The shared guarantees (no network, limits, output caps, hostile programs) live in the contract
suite; here: what the engine is asked for, labels, removal in every ending, leftovers, the
channel socket, peak memory. Skipped with the backend's own reason where no engine or image is
available, except in CI, where that is a failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import docker
import docker.errors
import pytest

from edc.config import Settings
from edc.errors import SandboxUnavailable
from edc.sandbox.base import CHANNEL_DIR, MODEL_DIR, SUBMISSION_DIR, ExitKind, Mount, SandboxSpec
from edc.sandbox.docker import (
    BASE_ENV,
    BUILD_SCRIPT,
    CGROUP_LABEL,
    CGROUP_ROOT,
    SANDBOX_LABEL,
    DockerSandbox,
    container_options,
    sandbox_labels,
)

REPO = Path(__file__).resolve().parents[2]
# Where the host's cgroup v1 memory hierarchy is writable, peaks come exact from a parent cgroup.
EXACT_PEAK = os.access(CGROUP_ROOT / "memory", os.W_OK)

# --- what the engine is asked for: a pure function, no engine needed ----------------------------


def test_container_options_confine_the_run(tmp_path: Path) -> None:
    model = tmp_path / "model"
    channel = tmp_path / "channel"
    spec = SandboxSpec(
        argv=("python3", "x.py"),
        submission_dir=tmp_path,
        env={"ONLY": "this"},
        mounts=(Mount(model, MODEL_DIR), Mount(channel, CHANNEL_DIR, writable=True)),
        memory_mb=300,
        pids_max=42,
        cpus=1.5,
        scratch_mb=20,
        labels={"submission": "7"},
    )
    options = container_options(spec)

    assert options["network_mode"] == "none"
    assert options["read_only"] is True
    assert options["cap_drop"] == ["ALL"]
    assert options["security_opt"] == ["no-new-privileges"]
    assert options["user"] == "65534:65534"
    assert options["mem_limit"] == options["memswap_limit"] == "300m"
    assert options["pids_limit"] == 42
    assert options["nano_cpus"] == 1_500_000_000
    assert "size=20m" in options["tmpfs"]["/tmp"]
    assert "noexec" not in options["tmpfs"]["/tmp"]
    assert options["environment"] == {**BASE_ENV, "ONLY": "this"}
    assert options["working_dir"] == SUBMISSION_DIR
    assert "device_requests" not in options
    mounts = {m["Target"]: (m["Source"], m["ReadOnly"], m["Type"]) for m in options["mounts"]}
    assert mounts == {
        SUBMISSION_DIR: (str(tmp_path.resolve()), True, "bind"),
        MODEL_DIR: (str(model.resolve()), True, "bind"),
        CHANNEL_DIR: (str(channel.resolve()), False, "bind"),
    }


def test_spec_env_wins_over_the_base_environment(tmp_path: Path) -> None:
    spec = SandboxSpec(argv=("x",), submission_dir=tmp_path, env={"PATH": "/only/here"})
    assert container_options(spec)["environment"]["PATH"] == "/only/here"


def test_gpus_become_one_device_request(tmp_path: Path) -> None:
    spec = SandboxSpec(argv=("x",), submission_dir=tmp_path, gpus=("1", "GPU-3f2a"))
    (request,) = container_options(spec)["device_requests"]
    assert request["DeviceIDs"] == ["1", "GPU-3f2a"]
    assert request["Capabilities"] == [["gpu"]]
    assert not request.get("Count")  # exactly the listed devices, not "all"


def test_labels_are_prefixed_and_mark_the_sandbox() -> None:
    labels = sandbox_labels({"submission": "12", "edc.worker": "w1"})
    assert labels == {"edc.submission": "12", "edc.worker": "w1", SANDBOX_LABEL: "true"}


def test_engine_that_does_not_answer_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    reason = DockerSandbox.unavailable_reason(Settings(sandbox_image="edc-sandbox:latest"))
    assert reason is not None
    assert "does not answer" in reason and "dockerd" in reason


# --- against the real engine ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> str:
    return Settings().sandbox_image


@pytest.fixture(scope="module")
def backend(image: str) -> DockerSandbox:
    reason = DockerSandbox.unavailable_reason(Settings(sandbox_image=image))
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return DockerSandbox(image=image)


@pytest.fixture
def engine(backend: DockerSandbox) -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture
def worker_label() -> dict[str, str]:
    """A label unique to the test, so concurrent test runs never see each other's containers."""
    return {"worker": f"test-{uuid.uuid4().hex[:10]}"}


def _spec(tmp_path: Path, code: str, labels: dict[str, str], **limits: object) -> SandboxSpec:
    submission = tmp_path / "submission"
    submission.mkdir(exist_ok=True)
    (submission / "main.py").write_text(code)
    return SandboxSpec(
        argv=("/usr/local/bin/python3", "main.py"),
        submission_dir=submission,
        labels=labels,
        **limits,  # type: ignore[arg-type]
    )


def _containers(engine: docker.DockerClient, labels: dict[str, str]) -> list[object]:
    filters = [f"{k}={v}" for k, v in sandbox_labels(labels).items()]
    return list(engine.containers.list(all=True, filters={"label": filters}))


def test_image_missing_names_the_build_script(backend: DockerSandbox) -> None:
    reason = DockerSandbox.unavailable_reason(
        Settings(sandbox_image=f"edc-no-such-image:{uuid.uuid4().hex[:8]}")
    )
    assert reason is not None and BUILD_SCRIPT in reason


def test_running_container_carries_the_labels(
    backend: DockerSandbox,
    engine: docker.DockerClient,
    tmp_path: Path,
    worker_label: dict[str, str],
) -> None:
    labels = {**worker_label, "submission": "41"}
    process = backend.start(_spec(tmp_path, "import time; time.sleep(60)", labels))
    try:
        (container,) = engine.containers.list(filters={"label": f"edc.worker={labels['worker']}"})
        assert container.labels["edc.submission"] == "41"
        assert container.labels[SANDBOX_LABEL] == "true"
        assert process.poll() is True
    finally:
        process.kill()
        result = process.wait()
    assert result.exit_kind is ExitKind.KILLED
    assert _containers(engine, labels) == []


def test_container_removed_after_success(
    backend: DockerSandbox,
    engine: docker.DockerClient,
    tmp_path: Path,
    worker_label: dict[str, str],
) -> None:
    result = backend.run(_spec(tmp_path, "print('done')", worker_label))
    assert result.ok and result.stdout == "done\n"
    assert _containers(engine, worker_label) == []


def test_timeout_kills_and_removes(
    backend: DockerSandbox,
    engine: docker.DockerClient,
    tmp_path: Path,
    worker_label: dict[str, str],
) -> None:
    spec = _spec(tmp_path, "while True: pass", worker_label, wall_timeout_s=1.0)
    result = backend.run(spec)
    assert result.exit_kind is ExitKind.TIMEOUT and result.exit_code is None
    assert 1.0 <= result.wall_s < 10
    assert _containers(engine, worker_label) == []


def test_memory_hog_is_memory_limit_and_removed(
    backend: DockerSandbox,
    engine: docker.DockerClient,
    tmp_path: Path,
    worker_label: dict[str, str],
) -> None:
    hog = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 2**20))\n"
    result = backend.run(_spec(tmp_path, hog, worker_label, memory_mb=128))
    assert result.exit_kind is ExitKind.MEMORY_LIMIT
    if EXACT_PEAK:
        assert result.peak_memory_bytes is not None
        assert result.peak_memory_bytes > 100 * 2**20
    assert _containers(engine, worker_label) == []


def test_kill_from_another_thread_removes(
    backend: DockerSandbox,
    engine: docker.DockerClient,
    tmp_path: Path,
    worker_label: dict[str, str],
) -> None:
    process = backend.start(_spec(tmp_path, "import time; time.sleep(60)", worker_label))
    killer = threading.Timer(0.5, process.kill)
    killer.start()
    result = process.wait()
    killer.join()
    assert result.exit_kind is ExitKind.KILLED and result.exit_code is None
    assert result.wall_s < 30
    assert _containers(engine, worker_label) == []


class _Interrupted(Exception):
    pass


def test_interrupted_wait_still_removes(
    backend: DockerSandbox,
    engine: docker.DockerClient,
    tmp_path: Path,
    worker_label: dict[str, str],
) -> None:
    # The way RQ's job timeout (SIGALRM) or Ctrl-C reaches a worker blocked in wait().
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGUSR1, interrupt)
    process = backend.start(_spec(tmp_path, "import time; time.sleep(60)", worker_label))
    sender = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        sender.start()
        with pytest.raises(_Interrupted):
            process.wait()
    finally:
        sender.join()
        signal.signal(signal.SIGUSR1, previous)
    assert _containers(engine, worker_label) == []


def test_remove_leftovers_removes_a_running_container(
    backend: DockerSandbox,
    engine: docker.DockerClient,
    tmp_path: Path,
    worker_label: dict[str, str],
) -> None:
    # A worker killed mid-run leaves its container running; a restarted one cleans up by label.
    other_label = {"worker": f"other-{uuid.uuid4().hex[:10]}"}
    left = DockerSandbox(image=backend.image).start(
        _spec(tmp_path, "import time; time.sleep(60)", worker_label)
    )
    other = backend.start(_spec(tmp_path, "import time; time.sleep(60)", other_label))
    try:
        parent = _containers(engine, worker_label)[0].labels.get(CGROUP_LABEL)  # type: ignore[attr-defined]
        assert DockerSandbox(image=backend.image).remove_leftovers(worker_label) == 1
        assert _containers(engine, worker_label) == []
        assert len(_containers(engine, other_label)) == 1  # another worker's run is untouched
        if parent:
            assert list(CGROUP_ROOT.glob(f"*/{parent.lstrip('/')}")) == []
    finally:
        other.kill()
        other.wait()
        left.kill()
        left.wait()


def test_host_files_become_readable_by_the_sandbox_user(
    backend: DockerSandbox, tmp_path: Path, worker_label: dict[str, str]
) -> None:
    spec = _spec(tmp_path, "print(open('data/secret.txt').read())", worker_label)
    data = spec.submission_dir / "data"
    data.mkdir(mode=0o700)
    (data / "secret.txt").write_text("readable")
    (data / "secret.txt").chmod(0o600)
    (spec.submission_dir / "main.py").chmod(0o600)
    result = backend.run(spec)
    assert result.ok, result.stderr
    assert result.stdout == "readable\n"


@pytest.mark.parametrize("writable", [False, True], ids=["read-only", "writable"])
def test_channel_socket_in_a_mount_is_connectable(
    backend: DockerSandbox, tmp_path: Path, worker_label: dict[str, str], writable: bool
) -> None:
    channel = tmp_path / "channel"
    channel.mkdir(mode=0o700)  # as mkdtemp makes it
    code = (
        "import socket\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.connect('/run/edc/edc.sock')\n"
        "s.sendall(b'hello from the sandbox')\n"
        "s.close()\n"
    )
    spec = _spec(tmp_path, code, worker_label)
    spec = SandboxSpec(
        argv=spec.argv,
        submission_dir=spec.submission_dir,
        mounts=(Mount(channel, CHANNEL_DIR, writable=writable),),
        labels=spec.labels,
    )
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(channel / "edc.sock"))
        listener.listen(1)
        listener.settimeout(30)
        process = backend.start(spec)
        try:
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(30)
                received = connection.recv(100)
        finally:
            result = process.wait()
    assert result.ok, result.stderr
    assert received == b"hello from the sandbox"


def test_program_that_cannot_be_executed_exits_127(
    backend: DockerSandbox, tmp_path: Path, worker_label: dict[str, str]
) -> None:
    spec = _spec(tmp_path, "", worker_label)
    spec = SandboxSpec(
        argv=("/submission/no-such-program",),
        submission_dir=spec.submission_dir,
        labels=spec.labels,
    )
    result = backend.run(spec)
    assert result.exit_kind is ExitKind.EXITED and result.exit_code == 127
    assert "no-such-program" in result.stderr


@pytest.mark.skipif(
    not EXACT_PEAK,
    reason="the engine's cgroup v1 memory hierarchy is not writable here: peaks are sampled",
)
def test_peak_memory_of_a_short_run_is_exact(
    backend: DockerSandbox, tmp_path: Path, worker_label: dict[str, str]
) -> None:
    # Instant runs first: one ending before its cgroup was looked at must not switch the
    # backend to sampling.
    for _ in range(3):
        assert backend.run(_spec(tmp_path, "pass", worker_label)).ok
    code = "a = bytearray(120 * 2**20)\na[::4096] = b'x' * len(a[::4096])\n"
    result = backend.run(_spec(tmp_path, code, worker_label, memory_mb=512))
    assert result.ok, result.stderr
    assert result.peak_memory_bytes is not None
    assert 120 * 2**20 <= result.peak_memory_bytes < 512 * 2**20


def test_peak_memory_from_engine_stats_where_cgroups_are_hidden(
    backend: DockerSandbox, tmp_path: Path, worker_label: dict[str, str]
) -> None:
    # As inside compose: the worker cannot see the engine's cgroup tree.
    hidden = DockerSandbox(image=backend.image)
    hidden._host_cgroups = False
    code = "import time\na = bytearray(120 * 2**20)\na[::4096] = b'x' * len(a[::4096])\n"
    code += "time.sleep(1.5)\n"
    result = hidden.run(_spec(tmp_path, code, worker_label, memory_mb=512))
    assert result.ok, result.stderr
    assert result.peak_memory_bytes is not None
    assert result.peak_memory_bytes >= 120 * 2**20


def test_output_is_capped_with_flags(
    backend: DockerSandbox, tmp_path: Path, worker_label: dict[str, str]
) -> None:
    code = "import sys\nsys.stdout.write('o' * 300000)\nsys.stderr.write('e' * 10)\n"
    result = backend.run(_spec(tmp_path, code, worker_label, output_cap_bytes=1000))
    assert result.stdout == "o" * 1000 and result.stdout_truncated
    assert result.stderr == "e" * 10 and not result.stderr_truncated


def test_build_script_is_idempotent(backend: DockerSandbox, image: str) -> None:
    # The image exists (the fixture checked): a second build with unchanged inputs does nothing.
    build = subprocess.run(
        [str(REPO / BUILD_SCRIPT), "--tag", image],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert "up to date" in build.stdout or "built" in build.stdout
    assert f"checked {image}: python" in build.stdout
    again = subprocess.run(
        [str(REPO / BUILD_SCRIPT), "--tag", image],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "up to date" in again.stdout


def test_gpus_on_an_engine_without_a_gpu_runtime_are_unavailable(
    backend: DockerSandbox,
    engine: docker.DockerClient,
    tmp_path: Path,
    worker_label: dict[str, str],
) -> None:
    if "nvidia" in (engine.info().get("Runtimes") or {}):
        pytest.skip("this engine has the NVIDIA runtime: the request would be granted")
    spec = _spec(tmp_path, "print('never')", worker_label, gpus=("0",))
    with pytest.raises(SandboxUnavailable, match="NVIDIA Container Toolkit"):
        backend.run(spec)
    assert _containers(engine, worker_label) == []

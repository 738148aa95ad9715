"""What the bubblewrap backend does beyond the shared contract: its confinement in detail, cgroups
and their removal, the rlimit fallbacks, setup failures, leftovers of a killed worker, and the
capped capture it shares with the other backends."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from edc.errors import SandboxUnavailable
from edc.sandbox import bwrap as bwrap_module
from edc.sandbox.base import CHANNEL_DIR, ExitKind, Mount, SandboxResult, SandboxSpec
from edc.sandbox.bwrap import (
    BwrapProcess,
    BwrapSandbox,
    _hidden_dirs,
    _python_dirs,
    _sandbox_args,
)
from edc.sandbox.capture import CappedBuffer, StreamCapture
from edc.sandbox.cgroups import CgroupLimits, RunCgroup, labels_of, run_name
from edc.sandbox.gpus import GpuBinds
from edc.sandbox.reaper import Reaper

HOSTILE = Path(__file__).parent / "hostile"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def bwrap() -> BwrapSandbox:
    reason = BwrapSandbox.unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the bwrap sandbox for real, but: {reason}")
        pytest.skip(reason)
    return BwrapSandbox()


@pytest.fixture(scope="module")
def cgroups_writable(bwrap: BwrapSandbox) -> None:
    probe = RunCgroup.create(run_name(f"probe-{uuid.uuid4().hex[:8]}", {}), CgroupLimits(MIB, 8, 1))
    limited = probe.limited
    probe.remove()
    if limited != {"memory", "pids", "cpu"}:
        pytest.skip(f"cgroup v1 memory/pids/cpu are not all writable here (only {set(limited)})")


@pytest.fixture
def label() -> dict[str, str]:
    return {"test": f"bwrap-{uuid.uuid4().hex[:8]}"}


def spec_for(tmp_path: Path, program: str, *args: str, **overrides: Any) -> SandboxSpec:
    submission = tmp_path / "submission"
    submission.mkdir(exist_ok=True)
    if program.endswith(".py"):
        (submission / program).write_bytes((HOSTILE / program).read_bytes())
    defaults: dict[str, Any] = {"wall_timeout_s": 20.0, "memory_mb": 256, "pids_max": 64}
    defaults.update(overrides)
    return SandboxSpec(argv=(sys.executable, program, *args), submission_dir=submission, **defaults)


def groups_labelled(labels: dict[str, str]) -> list[RunCgroup]:
    return [g for g in RunCgroup.existing() if labels.items() <= labels_of(g.name).items()]


def live_members(group: int) -> list[int]:
    """Processes of a process group that are not zombies (this machine's init reaps slowly)."""
    members = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def report_of(result: SandboxResult) -> Any:
    assert result.ok, result
    return json.loads(result.stdout.splitlines()[-1])


def test_the_sandbox_is_nobody_without_privileges_and_sees_only_itself(
    bwrap: BwrapSandbox, tmp_path: Path
) -> None:
    report = report_of(bwrap.run(spec_for(tmp_path, "introspect.py")))

    assert (report["uid"], report["gid"]) == (65534, 65534)
    assert int(report["cap_eff"], 16) == 0
    assert report["no_new_privs"] == "1"
    assert report["hostname"] == "sandbox"
    assert report["nested_user_namespace"] != "created"
    # bubblewrap's init (1), the program (2): nothing of the host's process table.
    assert report["pids"] == [1, 2]
    assert set(report["etc"]) <= {
        "passwd",
        "group",
        "hosts",
        "ld.so.cache",
        "ld.so.conf",
        "ld.so.conf.d",
        "alternatives",
        "localtime",
    }
    assert report["passwd_users"] == ["root", "nobody"]
    assert "shm" in report["dev"] and "null" in report["dev"]
    top = {Path(sys.prefix).parts[1], Path(sys.base_prefix).parts[1]}
    assert set(report["root"]) <= {
        "usr",
        "bin",
        "sbin",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "etc",
        "proc",
        "dev",
        "tmp",
        "submission",
        "opt",  # the decoder's libraries (numpy) at /opt/edc-libs
        *top,
    }
    # The interpreter and the decoder's libraries, but not the platform's own code.
    assert report["numpy"] is True
    assert report["edc"] is False
    assert report["cuda_visible_devices"] is None


def test_an_installed_platform_package_is_hidden_inside_the_interpreter_folder(
    bwrap: BwrapSandbox, tmp_path: Path
) -> None:
    # As after `pip install .`: the platform's package inside a bound interpreter folder.
    source = Path(__file__).resolve().parents[2] / "src"
    assert _hidden_dirs([source]) == [source / "edc"]
    assert _hidden_dirs([tmp_path]) == []

    venv = tmp_path / "venv"
    (venv / "edc").mkdir(parents=True)
    (venv / "edc" / "tasks.txt").write_text("hidden prompts")
    (venv / "other.txt").write_text("a library")
    (tmp_path / "submission").mkdir()
    probe = f"cat {venv}/other.txt; ls -A {venv}/edc; cat {venv}/edc/tasks.txt"
    spec = SandboxSpec(argv=("/bin/sh", "-c", probe), submission_dir=tmp_path / "submission")
    exe = shutil.which("bwrap")
    assert exe is not None
    process = BwrapProcess(
        exe,
        spec,
        RunCgroup("hidden-test"),
        python_dirs=[*_python_dirs(), venv],
        hidden_dirs=[venv / "edc"],
    )

    result = process.wait()
    assert result.stdout == "a library", result
    assert "No such file" in result.stderr
    assert "hidden prompts" not in result.stdout + result.stderr


def test_only_the_runs_gpus_are_bound_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The device tree of a two-GPU host, as gpus.py finds it (tests/sandbox/test_gpus.py).
    dev = tmp_path / "dev"
    asked: list[tuple[str, ...]] = []

    def binds(gpus: tuple[str, ...], bound: list[Path]) -> GpuBinds:
        asked.append(tuple(gpus))
        nodes = [dev / f"nvidia{g}" for g in gpus] + [dev / "nvidiactl"]
        return GpuBinds(tuple(nodes), (tmp_path / "lib" / "libcuda.so.1",), ("GPU-b",))

    monkeypatch.setattr(bwrap_module, "gpu_binds", binds)
    spec = SandboxSpec(argv=("true",), submission_dir=tmp_path, gpus=("1",))
    argv = _sandbox_args(spec, python_dirs=[], hidden_dirs=[])

    assert asked == [("1",)]
    dev_binds = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--dev-bind"]
    assert dev_binds == [str(dev / "nvidia1"), str(dev / "nvidiactl")]  # never nvidia0
    assert str(tmp_path / "lib" / "libcuda.so.1") in argv
    env = {argv[i + 1]: argv[i + 2] for i, arg in enumerate(argv) if arg == "--setenv"}
    # By UUID: CUDA numbers the devices it can open from 0, so index 1 would name none.
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-b"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


@pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="this machine has an NVIDIA driver")
def test_gpus_this_machine_lacks_are_refused_with_the_gpu_named(
    bwrap: BwrapSandbox, tmp_path: Path
) -> None:
    with pytest.raises(SandboxUnavailable, match=r"GPU 3.*does not exist"):
        bwrap.run(spec_for(tmp_path, "introspect.py", gpus=("3",)))


def test_cgroups_carry_the_limits_and_are_removed_after_the_run(
    bwrap: BwrapSandbox, tmp_path: Path, cgroups_writable: None, label: dict[str, str]
) -> None:
    spec = spec_for(
        tmp_path, "sleeper.py", "30", memory_mb=200, pids_max=40, cpus=0.5, labels=label
    )
    process = bwrap.start(spec)
    try:
        (group,) = groups_labelled(label)
        assert {"memory", "pids", "cpu"} <= set(group.dirs)
        memory, pids, cpu = group.dirs["memory"], group.dirs["pids"], group.dirs["cpu"]
        assert int((memory / "memory.limit_in_bytes").read_text()) == 200 * MIB
        assert (pids / "pids.max").read_text().strip() == "40"
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
        deadline = time.monotonic() + 5
        while len(group.pids()) < 3:  # bubblewrap, its init, the program
            assert time.monotonic() < deadline, group.pids()
            time.sleep(0.01)
    finally:
        process.kill()
        result = process.wait()

    assert result.exit_kind is ExitKind.KILLED
    assert groups_labelled(label) == []
    assert not any(path.exists() for path in group.dirs.values())


def test_without_cgroups_rlimits_stand_in(bwrap: BwrapSandbox, tmp_path: Path) -> None:
    fallback = BwrapSandbox(use_cgroups=False)
    assert "RLIMIT_AS" in fallback.describe_isolation()
    spec = spec_for(tmp_path, "introspect.py", memory_mb=300, pids_max=50, cpus=0.5)

    result = fallback.run(spec)
    limits = report_of(result)["limits"]

    def limit(name: str) -> list[str]:
        match = re.search(rf"^{name}\s+(\S+)\s+(\S+)", limits, re.MULTILINE)
        assert match, limits
        return [match.group(1), match.group(2)]

    assert limit("Max address space") == [str(300 * MIB)] * 2
    assert limit("Max processes") == ["50"] * 2
    assert limit("Max cpu time") == ["11", "12"]  # ceil(20 s x 0.5) + 1, hard one more
    assert limit("Max core file size") == ["0", "0"]
    assert result.peak_memory_bytes is None  # only a memory cgroup can tell

    hog = fallback.run(spec_for(tmp_path, "memory_hog.py", memory_mb=200))
    assert hog.exit_kind is ExitKind.EXITED and hog.exit_code != 0
    assert "MemoryError" in hog.stderr


def test_cpu_rlimit_fallback_ends_a_spin_as_timeout(bwrap: BwrapSandbox, tmp_path: Path) -> None:
    fallback = BwrapSandbox(use_cgroups=False)
    # 10 s x 0.1 CPU: a budget of 2 CPU seconds, well before the wall-clock limit.
    result = fallback.run(spec_for(tmp_path, "cpu_spin.py", wall_timeout_s=10.0, cpus=0.1))

    assert result.exit_kind is ExitKind.TIMEOUT
    assert result.wall_s < 9.5


def test_a_mount_bubblewrap_cannot_make_is_an_infrastructure_error(
    bwrap: BwrapSandbox, tmp_path: Path, label: dict[str, str]
) -> None:
    missing = Mount(tmp_path / "does-not-exist", "/model")
    process = bwrap.start(spec_for(tmp_path, "hello.py", mounts=(missing,), labels=label))

    with pytest.raises(SandboxUnavailable, match="could not set up the sandbox"):
        process.wait()
    assert groups_labelled(label) == []


def test_a_command_that_cannot_be_executed_is_the_submissions_exit(
    bwrap: BwrapSandbox, tmp_path: Path
) -> None:
    submission = tmp_path / "submission"
    submission.mkdir()
    (submission / "run").write_text("#!/bin/sh\necho not executable\n")

    result = bwrap.run(SandboxSpec(argv=("/submission/run",), submission_dir=submission))

    assert result.exit_kind is ExitKind.EXITED
    assert result.exit_code not in (0, None)
    assert "execvp" in result.stderr


def test_a_sandbox_outlives_the_short_lived_thread_that_started_it(
    bwrap: BwrapSandbox, tmp_path: Path
) -> None:
    # --die-with-parent follows the forking thread: the backend forks from a long-lived one.
    started: list[Any] = []

    def start_and_leave() -> None:
        started.append(bwrap.start(spec_for(tmp_path, "sleeper.py", "0.8")))
        time.sleep(0.2)

    starter = threading.Thread(target=start_and_leave)
    starter.start()
    starter.join()

    result = started[0].wait()
    assert result.ok, result


def test_killed_worker_takes_its_sandbox_and_cgroups_along(
    bwrap: BwrapSandbox, tmp_path: Path, label: dict[str, str]
) -> None:
    channel = tmp_path / "channel"
    channel.mkdir()
    heartbeat = channel / "heartbeat"
    worker_code = f"""
import sys, time
from pathlib import Path
from edc.sandbox.base import Mount, SandboxSpec
from edc.sandbox.bwrap import _hidden_dirs, _python_dirs, BwrapProcess, BwrapSandbox
beat = (
    "import time\\nwhile True:\\n"
    " open('{CHANNEL_DIR}/heartbeat', 'a').write('.')\\n time.sleep(0.02)"
)
sandbox = BwrapSandbox()
sandbox.start(SandboxSpec(
    argv=(sandbox.python, "-c", beat), submission_dir=Path({str(tmp_path)!r}),
    mounts=(Mount(Path({str(channel)!r}), "{CHANNEL_DIR}", writable=True),),
    labels={label!r}, wall_timeout_s=60,
))
time.sleep(60)
"""
    worker = subprocess.Popen([sys.executable, "-c", worker_code])
    try:
        deadline = time.monotonic() + 10
        while not (heartbeat.exists() and heartbeat.stat().st_size > 5):
            assert time.monotonic() < deadline, "the sandbox never started beating"
            assert worker.poll() is None, "the worker died on its own"
            time.sleep(0.02)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()

    time.sleep(0.3)
    beats = heartbeat.stat().st_size
    time.sleep(0.5)
    assert heartbeat.stat().st_size == beats, "the sandbox outlived its worker"

    # The worker's reaper removed its cgroups: nothing is left for a restarted worker.
    deadline = time.monotonic() + 5
    while groups_labelled(label):
        assert time.monotonic() < deadline, groups_labelled(label)
        time.sleep(0.05)
    assert bwrap.remove_leftovers(label) == 0


def test_killing_the_worker_at_any_moment_of_a_start_leaves_nothing_behind(
    bwrap: BwrapSandbox, tmp_path: Path, label: dict[str, str]
) -> None:
    # bubblewrap's own --die-with-parent has a gap during its set-up; the reaper closes it.
    submission = tmp_path / "submission-of-killed-workers"
    submission.mkdir()
    killer_code = f"""
import os, signal, time
from pathlib import Path
from edc.sandbox.base import SandboxSpec
from edc.sandbox.bwrap import BwrapSandbox
spec = SandboxSpec(argv=("/bin/sleep", "30"), submission_dir=Path({str(submission)!r}),
                   labels={label!r})
for step in range(24):
    pid = os.fork()
    if pid == 0:
        BwrapSandbox().start(spec)
        time.sleep(30)
        os._exit(0)
    time.sleep(step * 0.003)  # kill the worker at a different moment of the start each time
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""
    subprocess.run([sys.executable, "-c", killer_code], check=True, timeout=60)

    def leftovers() -> list[str]:
        found = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if str(submission).encode() in (entry / "cmdline").read_bytes():
                    found.append(entry.name)
        return found

    deadline = time.monotonic() + 10
    while leftovers() or groups_labelled(label):
        assert time.monotonic() < deadline, (leftovers(), groups_labelled(label))
        time.sleep(0.05)


def test_reaper_kills_registered_runs_when_its_worker_goes() -> None:
    registered = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60"], start_new_session=True)
    finished = subprocess.Popen(["sleep", "60"], start_new_session=True)
    reaper = Reaper()
    try:
        reaper.register("no-such-cgroup", registered.pid)
        reaper.register("no-such-cgroup-either", finished.pid)
        reaper.unregister("no-such-cgroup-either")
        time.sleep(0.1)  # the background sleep has started in the registered group

        reaper.close()

        assert registered.wait(timeout=5) == -signal.SIGKILL
        assert live_members(registered.pid) == []
        assert finished.poll() is None
    finally:
        for process in (registered, finished):
            process.kill()
            process.wait()


def test_remove_leftovers_kills_what_is_still_inside(
    bwrap: BwrapSandbox, cgroups_writable: None, label: dict[str, str]
) -> None:
    group = RunCgroup.create(run_name(uuid.uuid4().hex[:16], label), CgroupLimits(64 * MIB, 8, 1))
    straggler = subprocess.Popen(["sleep", "60"])
    try:
        group.join(straggler.pid)
        assert straggler.pid in group.pids()
        unrelated = {"test": "someone-else"}
        assert bwrap.remove_leftovers(unrelated) == 0

        assert bwrap.remove_leftovers(label) == 1
        assert straggler.wait(timeout=5) == -signal.SIGKILL
    finally:
        straggler.kill()
        straggler.wait()
    assert groups_labelled(label) == []


def test_run_names_round_trip_their_labels() -> None:
    labels = {"worker": "host-1,w=2", "submission": "42", "odd": "ü %/"}
    name = run_name("abc123", labels)

    assert "/" not in name
    assert name.startswith("abc123,")
    assert labels_of(name) == labels
    with pytest.raises(ValueError, match="too long"):
        run_name("abc", {"k": "v" * 300})


def test_missing_bubblewrap_is_refused_with_the_install_command(tmp_path: Path) -> None:
    class NotInstalled(BwrapSandbox):
        executable = f"bwrap-not-installed-{uuid.uuid4().hex[:6]}"

    reason = NotInstalled.unavailable_reason()
    assert reason is not None and "apt-get install -y bubblewrap" in reason
    with pytest.raises(SandboxUnavailable, match="apt-get install -y bubblewrap"):
        NotInstalled().start(spec_for(tmp_path, "hello.py"))


def test_isolation_is_described(bwrap: BwrapSandbox) -> None:
    text = bwrap.describe_isolation()

    assert "namespaces" in text
    for limit in ("memory:", "pids:", "cpu:", "kill:"):
        assert limit in text


# --- the capped capture (shared with the docker backend) ---


def test_capped_buffer_keeps_the_head_and_counts_the_rest() -> None:
    buffer = CappedBuffer(10)
    for chunk in (b"hello ", b"world, ", b"and more"):
        buffer.feed(chunk)

    out = buffer.result()
    assert out.data == b"hello worl"
    assert out.total_bytes == 21
    assert out.truncated
    assert not CappedBuffer(10).result().truncated


def test_stream_capture_drains_a_flood_without_blocking_the_writer() -> None:
    read_fd, write_fd = os.pipe()
    capture = StreamCapture(os.fdopen(read_fd, "rb"), 1000).start()
    flood = 32 * MIB

    def write() -> None:
        with os.fdopen(write_fd, "wb") as pipe:
            for _ in range(flood // MIB):
                pipe.write(b"z" * MIB)

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(timeout=20)
    assert not writer.is_alive(), "the writer blocked on a full pipe"

    out = capture.result(timeout=5)
    assert capture.finished
    assert out.data == b"z" * 1000
    assert out.total_bytes == flood
    assert out.text() == "z" * 1000


def test_stream_capture_reads_an_iterable_of_chunks() -> None:
    out = StreamCapture(iter([b"ab", "\u00e9".encode(), b"cd"]), 3).start().result(timeout=5)

    assert out.data == b"ab\xc3"
    assert out.text() == "ab\ufffd"
    assert out.truncated

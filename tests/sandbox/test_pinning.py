"""A worker owns its cores: its sandboxes see exactly them, on every backend, with one math
thread per core; the harness runs off them where a core is spare; and `edc up`'s split refuses
workers that do not fit, with the arithmetic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edc.config import Settings
from edc.errors import SandboxUnavailable
from edc.harness.evaluate import session_limits
from edc.harness.runner import sandbox_env
from edc.sandbox.base import Sandbox, SandboxSpec
from edc.sandbox.bwrap import BwrapSandbox
from edc.sandbox.cgroups import CgroupLimits, RunCgroup, run_name
from edc.sandbox.cpus import (
    available_cpus,
    check_enough,
    harness_cpus,
    harness_pinned,
    pin_process,
    split_cpus,
    thread_count,
    worker_cpus,
)
from edc.sandbox.docker import IMAGE_PYTHON, DockerSandbox
from edc.tasks.task import load_task

MIB = 1024 * 1024
CORES = available_cpus()
# The worker's share in these tests: the highest core, so that pinning is visible (not "all").
OWNED = CORES[-1:]
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# Prints the affinity mask, the thread variables, and the mask after trying to take every core.
PROBE = f"""
import json, os
before = sorted(os.sched_getaffinity(0))
try:
    os.sched_setaffinity(0, {set(CORES)!r})
except OSError:
    pass
threads = {{k: os.environ.get(k) for k in {THREAD_VARS!r}}}
print(json.dumps({{"mask": before, "widened": sorted(os.sched_getaffinity(0)), "env": threads}}))
"""

needs_two_cores = pytest.mark.skipif(len(CORES) < 2, reason="pinning needs two cores to show")


def _probe(sandbox: Sandbox, tmp_path: Path, cpuset: tuple[int, ...]) -> dict[str, object]:
    submission = tmp_path / "submission"
    submission.mkdir(exist_ok=True)
    (submission / "probe.py").write_text(PROBE)
    spec = SandboxSpec(
        argv=(sandbox.python, "probe.py"),
        submission_dir=submission,
        env=sandbox_env(1.0, cpuset),
        cpuset=cpuset,
        wall_timeout_s=30,
        labels={"test": f"pinning-{uuid.uuid4().hex[:8]}"},
    )
    result = sandbox.run(spec)
    assert result.ok, result
    report: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return report


@pytest.fixture(scope="module")
def bwrap() -> BwrapSandbox:
    reason = BwrapSandbox.unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return BwrapSandbox()


@pytest.fixture(scope="module")
def cpuset_writable(bwrap: BwrapSandbox) -> None:
    probe = RunCgroup.create(
        run_name(f"probe-{uuid.uuid4().hex[:8]}", {}), CgroupLimits(MIB, 8, 1, cpuset=OWNED)
    )
    pinned = probe.pinned
    probe.remove()
    if not pinned:
        pytest.skip("the cgroup v1 cpuset hierarchy is not writable here")


@pytest.fixture(scope="module")
def docker_sandbox() -> Iterator[DockerSandbox]:
    image = Settings().sandbox_image
    reason = DockerSandbox.unavailable_reason(Settings(sandbox_image=image))
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    yield DockerSandbox(image=image)


# --- inside the sandbox ----------------------------------------------------------------------


@needs_two_cores
def test_bwrap_cpuset_pins_the_run_and_holds_it(
    bwrap: BwrapSandbox, cpuset_writable: None, tmp_path: Path
) -> None:
    report = _probe(bwrap, tmp_path, OWNED)
    assert report["mask"] == list(OWNED)
    # The cgroup, not just the mask: taking every core gives the program nothing more.
    assert report["widened"] == list(OWNED)
    assert report["env"] == dict.fromkeys(THREAD_VARS, "1")
    assert "cores: cgroup v1 cpuset" in bwrap.describe_isolation()


@needs_two_cores
def test_bwrap_without_cgroups_pins_by_affinity(bwrap: BwrapSandbox, tmp_path: Path) -> None:
    fallback = BwrapSandbox(use_cgroups=False)
    report = _probe(fallback, tmp_path, OWNED)
    assert report["mask"] == list(OWNED)
    assert report["env"] == dict.fromkeys(THREAD_VARS, "1")
    assert "cores: sched_setaffinity" in fallback.describe_isolation()


def test_bwrap_run_on_every_core_sees_every_core(bwrap: BwrapSandbox, tmp_path: Path) -> None:
    report = _probe(bwrap, tmp_path, CORES)
    assert report["mask"] == list(CORES)


@needs_two_cores
def test_docker_cpuset_cpus_pins_the_container(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    assert docker_sandbox.python == IMAGE_PYTHON
    report = _probe(docker_sandbox, tmp_path, OWNED)
    assert report["mask"] == list(OWNED)
    assert report["widened"] == list(OWNED)
    assert report["env"] == dict.fromkeys(THREAD_VARS, "1")


# --- what a worker owns ------------------------------------------------------------------------


def test_math_threads_follow_the_cores_up_to_the_share() -> None:
    assert thread_count(2.0, (4, 5)) == 2
    assert thread_count(1.5, (4, 5)) == 2
    # More cores than the quota allows at once: a bigger pool would only be throttled.
    assert thread_count(1.0, (0, 1, 2, 3)) == 1
    assert thread_count(2.0, ()) == 2  # unpinned: the share, rounded up
    assert sandbox_env(2.0, (6, 7))["OMP_NUM_THREADS"] == "2"


def test_the_worker_s_cores_go_into_each_run_s_limits() -> None:
    settings = Settings(cpus=",".join(str(c) for c in OWNED))
    limits = session_limits(load_task(settings), settings)
    assert limits.cpuset == OWNED
    assert Settings().cpu_ids == ()
    assert session_limits(load_task(Settings()), Settings()).cpuset == CORES


@needs_two_cores
def test_the_harness_times_on_a_core_the_worker_does_not_own() -> None:
    settings = Settings(cpus=str(CORES[0]))
    placed = worker_cpus(settings)
    assert placed.owned == (CORES[0],)
    assert placed.harness == CORES[1:] == harness_cpus(settings)
    assert "harness on cores" in placed.describe()
    assert session_limits(load_task(settings), settings).harness_cpuset == CORES[1:]


@needs_two_cores
def test_harness_pinned_holds_every_thread_for_the_block_only() -> None:
    seen: list[set[int]] = []
    ready, done = threading.Event(), threading.Event()

    def helper() -> None:  # a thread started before the block, like a heartbeat
        ready.set()
        done.wait(10)
        seen.append(os.sched_getaffinity(0))

    thread = threading.Thread(target=helper)
    thread.start()
    ready.wait(10)
    before = os.sched_getaffinity(0)
    with harness_pinned(OWNED):
        assert os.sched_getaffinity(0) == set(OWNED)
        done.set()
        thread.join(10)
    assert seen == [set(OWNED)]
    assert os.sched_getaffinity(0) == before
    with harness_pinned(()):
        assert os.sched_getaffinity(0) == before


def test_a_worker_owning_every_core_shares_them_with_its_harness() -> None:
    placed = worker_cpus(Settings())
    assert placed.owned == CORES and placed.harness == ()
    assert "harness shares them (no spare core)" in placed.describe()


def test_cores_the_worker_may_not_use_are_refused() -> None:
    with pytest.raises(SandboxUnavailable, match=r"EDC_CPUS=8000 names cores 8000 .* may use"):
        worker_cpus(Settings(cpus="8000"))


def test_a_worker_must_own_the_task_s_share() -> None:
    check_enough((0, 1), 2.0)
    with pytest.raises(SandboxUnavailable, match=r"owns 1 core \(3\) but the task needs 2"):
        check_enough((3,), 1.5)


def test_pin_process_pins_every_thread_of_a_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pin_process(child.pid, OWNED)
        assert os.sched_getaffinity(child.pid) == set(OWNED)
    finally:
        child.kill()
        child.wait()


# --- how `edc up` splits the cores --------------------------------------------------------------


def test_split_gives_each_worker_the_share_and_keeps_the_rest_spare() -> None:
    split = split_cpus((0, 1, 2, 3, 4), 2, 1.5)
    assert split.workers == ((0, 1), (2, 3))
    assert split.spare == (4,)
    assert split_cpus((0, 1), 2, 1.0).spare == ()


def test_too_many_workers_are_refused_with_the_arithmetic() -> None:
    with pytest.raises(SandboxUnavailable) as refused:
        split_cpus((0, 1), 2, 2.0)
    assert refused.value.message.startswith(
        "2 workers × 2 cores each = 4 cores needed; this machine has 2 (0-1)."
    )
    with pytest.raises(SandboxUnavailable, match=r"^3 workers × 1 core each = 3 cores needed; "):
        split_cpus((4, 6), 3, 1.0, source="EDC_CPUS=4,6 gives")

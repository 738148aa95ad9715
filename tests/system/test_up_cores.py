"""`edc up` shares the machine's cores out between its workers, and refuses workers that do not
fit before it starts anything."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from edc.config import format_id_list
from edc.sandbox.cpus import available_cpus
from tests.support.platform import free_port, start_platform, stop_platform

pytestmark = pytest.mark.slow

CORES = available_cpus()


def test_more_workers_than_cores_are_refused_and_nothing_starts(tmp_path: Path) -> None:
    workers = len(CORES) + 1  # the bundled task's share is one core
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDC_")}
    # Wide enough that the message is not wrapped.
    env.update({"EDC_DATA_DIR": str(tmp_path / "data"), "EDC_SANDBOX": "bwrap", "COLUMNS": "300"})
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "edc", "up", "--port", str(free_port()), "--workers", str(workers)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert time.monotonic() - started < 30
    expected = (
        f"{workers} workers × 1 core each = {workers} cores needed; this machine has "
        f"{len(CORES)} ({format_id_list(CORES)})"
    )
    assert expected in done.stderr + done.stdout
    # Refused before the database, Redis or any child existed.
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def _workers(up: psutil.Process) -> dict[str, psutil.Process]:
    """`edc up`'s worker children by their --name-suffix."""
    found = {}
    for child in up.children():
        line = child.cmdline()
        if "worker" in line and "--name-suffix" in line:
            found[line[line.index("--name-suffix") + 1]] = child
    return found


@pytest.mark.skipif(len(CORES) < 2, reason="a split needs two cores")
def test_each_worker_owns_its_share_of_the_cores(tmp_path: Path) -> None:
    platform = start_platform(tmp_path, workers=2)
    try:
        workers = _workers(psutil.Process(platform.process.pid))
        assert sorted(workers) == ["1", "2"]
        for suffix, core in (("1", CORES[0]), ("2", CORES[1])):
            assert workers[suffix].environ()["EDC_CPUS"] == str(core)
            # Its own core and the spare ones (where its harness times runs): none spare here.
            spare = set(CORES[2:])
            assert set(workers[suffix].cpu_affinity()) == {core} | spare
    finally:
        log = stop_platform(platform)
    assert f"worker-1 owns cores {CORES[0]}" in log and f"worker-2 owns cores {CORES[1]}" in log

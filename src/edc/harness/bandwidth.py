"""Memory bandwidth of this machine, for the roofline when a task does not state its own.

A STREAM-style copy: the best of a few ``np.copyto`` passes over arrays far larger than any cache,
counting the bytes read plus the bytes written. Measured once per process (the worker calls
:func:`device_bandwidth_gb_per_s` at start) and cached, since it costs about a second. A run on a
GPU is held to the GPU's device memory instead: the same copy as a torch kernel on that device.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time

import numpy as np

from edc.errors import InvalidTask

DEFAULT_ARRAY_MB = 256
DEFAULT_PASSES = 5
CHILD_TIMEOUT_S = 120


def measure_copy_bandwidth_gb_per_s(
    *, array_mb: int = DEFAULT_ARRAY_MB, passes: int = DEFAULT_PASSES
) -> float:
    """Best observed copy bandwidth in GB/s (10⁹ bytes), reads and writes both counted."""
    count = array_mb * 1024 * 1024 // 8
    source = np.ones(count, dtype=np.float64)
    target = np.empty_like(source)
    np.copyto(target, source)  # fault the pages in before timing
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter_ns()
        np.copyto(target, source)
        best = min(best, time.perf_counter_ns() - start)
    return 2 * source.nbytes / best


@functools.cache
def machine_bandwidth_gb_per_s() -> float:
    return measure_copy_bandwidth_gb_per_s()


def measure_device_copy_gb_per_s(
    device: str, *, array_mb: int = 1024, passes: int = DEFAULT_PASSES
) -> float:
    """The same copy on a CUDA device with torch (timed by the device's own events): its
    device-memory bandwidth in GB/s, reads and writes both counted."""
    try:
        import torch
    except ImportError as exc:
        raise InvalidTask(
            f"The roofline of a run on {device} needs torch in the worker: "
            'pip install "edc[torch]".'
        ) from exc
    if not torch.cuda.is_available():
        raise InvalidTask(f"The run's weights live on {device}, but torch sees no GPU here.")
    count = array_mb * 1024 * 1024 // 4
    source = torch.ones(count, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    torch.cuda.synchronize(device)
    best_ms = float("inf")
    for _ in range(passes):
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        target.copy_(source)
        end.record()
        end.synchronize()
        best_ms = min(best_ms, start.elapsed_time(end))
    return 2 * count * 4 / (best_ms * 1e-3) / 1e9


@functools.cache
def device_bandwidth_gb_per_s(device: str) -> float:
    """This machine's memory bandwidth where a run's weights live: ``cpu`` or a CUDA device.

    A GPU is measured in a child process: CUDA set up in a worker would not survive the fork of
    its work-horses, and its context would keep device memory from the runs it times.
    """
    if device == "cpu":
        return machine_bandwidth_gb_per_s()
    done = subprocess.run(
        [sys.executable, "-m", "edc.harness.bandwidth", device],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    try:
        return float(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise InvalidTask(
            f"The bandwidth of {device} could not be measured: "
            f"{(done.stderr or done.stdout).strip()[-500:]}"
        ) from exc


def main() -> None:
    """``python -m edc.harness.bandwidth DEVICE``: print the device's copy bandwidth in GB/s."""
    try:
        print(measure_device_copy_gb_per_s(sys.argv[1]))  # noqa: T201 - the parent reads it
    except InvalidTask as exc:
        sys.exit(exc.message)


if __name__ == "__main__":
    main()

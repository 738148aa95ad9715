"""Memory bandwidth of this machine, for the roofline when a task does not state its own.

A STREAM-style copy: the best of a few ``np.copyto`` passes over arrays far larger than any cache,
counting the bytes read plus the bytes written. Measured once per process (the worker calls
:func:`machine_bandwidth_gb_per_s` at start) and cached, since it costs about a second.
"""

from __future__ import annotations

import functools
import time

import numpy as np

DEFAULT_ARRAY_MB = 256
DEFAULT_PASSES = 5


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

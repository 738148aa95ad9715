"""Job functions the worker tests enqueue (importable by RQ's work-horse)."""

from __future__ import annotations

import time
from pathlib import Path


def timed_sleep(log: str, name: str, seconds: float) -> None:
    """Sleep, writing when this job started and ended."""
    with Path(log).open("a") as fh:
        fh.write(f"{name} start {time.monotonic()}\n")
    time.sleep(seconds)
    with Path(log).open("a") as fh:
        fh.write(f"{name} end {time.monotonic()}\n")

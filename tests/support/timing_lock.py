"""Tests that compare measured times run alone on the machine.

The suite runs on several processes (pytest-xdist). A test that times a decoder against another
(an honest one against a cheat) or against a schedule would then compare runs made under
different loads, and fail by chance. Such tests carry ``@pytest.mark.timing``: each holds the
machine's timing lock exclusively, every other test holds it shared, so a timed test waits for
the tests beside it to finish and no test starts beside it. A turnstile taken on the way in keeps
a stream of shared holders from starving a timed test. The lock is a file in the temporary folder,
so it also spans test runs that share this machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Where the lock's files are: the temporary folder, unless a run is given its own (the test of
# this lock runs a suite inside a test, which holds the machine's lock already).
FOLDER = Path(os.environ.get("EDC_TEST_TIMING_LOCK_DIR") or tempfile.gettempdir())
LOCK = FOLDER / "edc-tests-timing.lock"
TURNSTILE = FOLDER / "edc-tests-timing.turnstile"
# Far longer than any test holds it: past this, something outside the run holds it (a test run
# stopped at a debugger prompt), and the run stops saying so rather than hanging.
WAIT_LIMIT_S = float(os.environ.get("EDC_TEST_TIMING_LOCK_WAIT_S") or 15 * 60)


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR)
    except FileNotFoundError:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        # Open to every user's runs on this machine (the umask would narrow it).
        with contextlib.suppress(PermissionError):
            os.chmod(path, 0o666)
        return descriptor


def _take(descriptor: int, mode: int, path: Path) -> None:
    """Take the lock on ``descriptor``; TimeoutError past WAIT_LIMIT_S."""
    deadline = time.monotonic() + WAIT_LIMIT_S
    while True:
        try:
            fcntl.flock(descriptor, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"waited {WAIT_LIMIT_S:g} s for the tests' timing lock {path}: a process "
                    f"outside this run holds it (see `fuser {path}`)"
                ) from None
            time.sleep(0.05)


_NOT_TAKEN = pytest.StashKey[str]()


# tryfirst: the outermost wrapper, so the wait is not counted in the test's own timeout.
@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Hold the lock through the test's set-up, call and tear-down."""
    timed = item.get_closest_marker("timing") is not None
    lock = _open(LOCK)
    turnstile = _open(TURNSTILE)
    try:
        try:
            _take(turnstile, fcntl.LOCK_EX, TURNSTILE)
            _take(lock, fcntl.LOCK_EX if timed else fcntl.LOCK_SH, LOCK)
        except TimeoutError as exc:
            # The test fails at its set-up, saying why, and the run stops after it.
            item.stash[_NOT_TAKEN] = str(exc)
            item.session.shouldstop = str(exc)
        os.close(turnstile)  # closing releases it
        turnstile = -1
        yield
    finally:
        if turnstile >= 0:
            os.close(turnstile)
        os.close(lock)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    message = item.stash.get(_NOT_TAKEN, None)
    if message is not None:
        pytest.fail(message, pytrace=False)

"""A stop raised by a signal handler survives landing inside code where Python ignores
exceptions (a weakref callback, as seen when a busy worker was stopped mid-run)."""

from __future__ import annotations

import os
import signal
import sys
import time
import weakref
from collections.abc import Iterator

import pytest

from edc.worker import executor


class _Referent:
    pass


@pytest.fixture
def restored_handlers() -> Iterator[None]:
    term, hook = signal.getsignal(signal.SIGTERM), sys.unraisablehook
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, term)
        sys.unraisablehook = hook


def _signal_inside_a_weakref_callback() -> None:
    referent = _Referent()
    # The callback signals and then runs more bytecode, so the handler fires inside it.
    ref = weakref.ref(referent, lambda _r: [os.kill(os.getpid(), signal.SIGTERM), 0][1])
    del referent
    assert ref() is None


def _spin(seconds: float = 1.0) -> None:
    """Bytecode boundaries, where a pending handler runs, for a while."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def test_without_the_hook_python_swallows_the_stop(restored_handlers: None) -> None:
    signal.signal(signal.SIGTERM, executor._stop_on_sigterm)
    swallowed: list[BaseException | None] = []
    sys.unraisablehook = lambda u: swallowed.append(u.exc_value)
    _signal_inside_a_weakref_callback()
    _spin()
    assert [type(e) for e in swallowed] == [executor.WorkerStopping]


def test_a_swallowed_stop_is_raised_again_outside(restored_handlers: None) -> None:
    signal.signal(signal.SIGTERM, executor._stop_on_sigterm)
    sys.unraisablehook = lambda u: None  # quiet "Exception ignored" from the first raise
    executor.resignal_when_swallowed()
    with pytest.raises(executor.WorkerStopping):
        _signal_inside_a_weakref_callback()
        _spin()


def test_other_unraisable_exceptions_reach_the_previous_hook(restored_handlers: None) -> None:
    seen: list[type[BaseException]] = []
    sys.unraisablehook = lambda u: seen.append(type(u.exc_value))
    executor.resignal_when_swallowed()
    referent = _Referent()
    ref = weakref.ref(referent, lambda _r: 1 / 0)
    del referent
    assert ref() is None
    assert seen == [ZeroDivisionError]

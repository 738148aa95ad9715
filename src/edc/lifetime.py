"""Tying a process's life to its parent's (Linux): the kernel signals it when the parent dies."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(sig: signal.Signals = signal.SIGKILL) -> None:
    """Ask for ``sig`` when the parent dies; if it already has, deliver ``sig`` now."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), sig)

"""Kills a worker's sandboxes when the worker dies, whatever the moment.

bubblewrap's --die-with-parent has a gap: killed while bubblewrap is still setting up, its sandbox's
init is left behind with no parent-death signal (blocked forever, or running the submission with
nobody watching). A pipe does not have that gap: when a process dies, the kernel closes its end.

So each worker process starts one reaper (``python -m edc.sandbox.reaper``) and keeps its stdin
open. It tells the reaper about every run before it creates its cgroups, once more when its
process group exists (0: none yet), and when it ends::

    + <run cgroup name> <process group>
    - <run cgroup name>

At end of input (the worker exited or was killed) the reaper SIGKILLs the process group of every
run still registered (bubblewrap and, until it starts its own session, the sandbox's init) and
every process in the run's cgroups, then removes the cgroups.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from typing import TextIO

from edc.sandbox.cgroups import RunCgroup


class Reaper:
    """The worker's side: starts the reaper process on first use and keeps it told.

    Raises OSError when the reaper cannot be started or told.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._runs: dict[str, int] = {}

    def register(self, name: str, group: int = 0) -> None:
        with self._lock:
            self._runs[name] = group
            if self._process is None or self._process.poll() is not None:
                self._process = self._start()  # tells it every registered run, this one too
            else:
                self._send(f"+ {name} {group}\n")

    def unregister(self, name: str) -> None:
        with self._lock:
            self._runs.pop(name, None)
            if self._process is not None and self._process.poll() is None:
                self._send(f"- {name}\n")

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the reaper as the worker's death would: it kills the runs still registered."""
        with self._lock:
            process, self._process = self._process, None
        if process is not None and process.stdin is not None:
            process.stdin.close()
            process.wait(timeout_s)

    def let_go(self) -> None:
        """In a forked child: close this copy of the parent's pipe, so the parent's death shows."""
        if self._process is not None and self._process.stdin is not None:
            with contextlib.suppress(OSError):
                os.close(self._process.stdin.fileno())

    def _start(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # out of reach of signals sent to the worker's group
        )
        self._process = process
        for name, group in self._runs.items():
            self._send(f"+ {name} {group}\n")
        return process

    def _send(self, line: str) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(line.encode())
        self._process.stdin.flush()


def serve(requests: TextIO) -> dict[str, int]:
    """Reads registrations until end of input; returns the runs still registered then."""
    runs: dict[str, int] = {}
    for line in requests:
        op, name, group = (*line.split(), "", "")[:3]
        if op == "+" and group.isdigit():
            runs[name] = int(group)
        elif op == "-":
            runs.pop(name, None)
    return runs


def reap(runs: dict[str, int]) -> None:
    for group in runs.values():
        if group > 0:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
    for cgroup in RunCgroup.existing():
        if cgroup.name in runs:
            cgroup.kill()
            cgroup.remove()


def main() -> None:
    # Interrupts meant for the worker's terminal must not stop the reaper before its job is done.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reap(serve(sys.stdin))


if __name__ == "__main__":
    main()

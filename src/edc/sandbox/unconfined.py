"""No sandbox: a participant evaluating their own code where no sandbox can start (a GPU machine
under gVisor, say) with ``edc eval --sandbox none``.

An explicit choice for one's own code, never a default and never available to a worker: it is not
in the backends' registry, ``EDC_SANDBOX`` cannot name it, and only ``edc eval`` builds it. The
program runs as a plain child process of the caller's interpreter (its packages, torch included,
importable), with the spec's environment and a wall-clock limit kept from outside; nothing else is
confined. Paths inside a sandbox (``/submission``, ``/model``, ``/run/edc``) do not exist here, so
the argv and the environment are rewritten to the mounts' host paths.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from edc.config import Settings
from edc.sandbox.base import (
    SUBMISSION_DIR,
    ExitKind,
    Sandbox,
    SandboxProcess,
    SandboxResult,
    SandboxSpec,
)
from edc.sandbox.capture import StreamCapture
from edc.sandbox.runtime import DecoderRuntime

NAME = "none"
PASSED_THROUGH = ("PYTHONPATH", "LD_LIBRARY_PATH", "CUDA_HOME")
_CAPTURE_JOIN_S = 5.0


def host_paths(spec: SandboxSpec) -> dict[str, str]:
    """Each sandbox path the spec uses, and the host path it stands for (longest first)."""
    paths = {SUBMISSION_DIR: str(Path(spec.submission_dir).absolute())}
    paths |= {m.target: str(Path(m.host).absolute()) for m in spec.mounts}
    return dict(sorted(paths.items(), key=lambda item: -len(item[0])))


def _on_host(value: str, paths: dict[str, str]) -> str:
    for inside, host in paths.items():
        if value == inside or value.startswith(inside + "/"):
            return host + value[len(inside) :]
    return value


class UnconfinedSandbox(Sandbox):
    name = NAME

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        runtime: DecoderRuntime | None = None,
        private_dirs: Sequence[Path] = (),  # nothing of the host is shown but what is bound
    ) -> UnconfinedSandbox:
        return cls()

    @property
    def python(self) -> str:
        return sys.executable

    @classmethod
    def unavailable_reason(
        cls, settings: Settings | None = None, runtime: DecoderRuntime | None = None
    ) -> str | None:
        return None

    def identity(self) -> str:
        python = ".".join(str(part) for part in sys.version_info[:3])
        return f"no sandbox (edc eval --sandbox none); python {python} at {self.python}"

    def describe_isolation(self) -> str:
        return "none: the program runs as a plain child process, with the caller's rights"

    def start(self, spec: SandboxSpec) -> UnconfinedProcess:
        return UnconfinedProcess(spec)

    def seen_at(self, spec: SandboxSpec, path: str) -> str:
        return _on_host(path, host_paths(spec))


class UnconfinedProcess(SandboxProcess):
    def __init__(self, spec: SandboxSpec) -> None:
        self._spec = spec
        paths = host_paths(spec)
        # The caller's way to its packages and its GPU driver (often found through
        # LD_LIBRARY_PATH) carries over: the point is to run with what this machine has.
        passed = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            **passed,
            **{key: _on_host(value, paths) for key, value in spec.env.items()},
        }
        if spec.gpus:  # named, not confined: nothing stops the program from unsetting it
            env["CUDA_VISIBLE_DEVICES"] = ",".join(spec.gpus)
        self._started = time.monotonic()
        self._popen = subprocess.Popen(
            [_on_host(arg, paths) for arg in spec.argv],
            cwd=spec.submission_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # one process group, killed whole
        )
        assert self._popen.stdout is not None and self._popen.stderr is not None
        cap = spec.output_cap_bytes
        self._stdout = StreamCapture(self._popen.stdout, cap, name="run-stdout").start()
        self._stderr = StreamCapture(self._popen.stderr, cap, name="run-stderr").start()
        self._lock = threading.Lock()
        self._killed = False
        self._timed_out = False

    def poll(self) -> bool:
        return self._popen.poll() is None

    def kill(self) -> None:
        with self._lock:
            self._killed = True
            self._kill_group()

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signal.SIGKILL)

    def wait(self) -> SandboxResult:
        deadline = self._started + self._spec.wall_timeout_s
        try:
            self._popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with self._lock:
                self._timed_out = not self._killed
                self._kill_group()
            self._popen.wait()
        wall_s = time.monotonic() - self._started
        self._kill_group()  # what it left running in its group
        stdout = self._stdout.result(_CAPTURE_JOIN_S)
        stderr = self._stderr.result(_CAPTURE_JOIN_S)
        code = self._popen.returncode
        if self._timed_out:
            kind, code = ExitKind.TIMEOUT, None
        elif self._killed or code < 0:
            kind, code = ExitKind.KILLED, None
        else:
            kind = ExitKind.EXITED
        return SandboxResult.captured(
            kind,
            code,
            wall_s=wall_s,
            peak_memory_bytes=None,
            stdout=stdout,
            stderr=stderr,
        )

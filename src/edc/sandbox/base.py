"""The sandbox seam: one small interface, a backend per isolation technology.

A worker describes *what* to run (:class:`SandboxSpec`); a backend (``bwrap.py``, ``docker.py``)
decides *how* to confine it. Every backend promises the same contract, and one test-suite checks
it on each:

- no network at all (not even the host's loopback), a read-only system, only ``/tmp`` (size-capped
  scratch) and the mounts marked writable can be written;
- the environment is exactly ``spec.env``: nothing of the platform's (secrets, URLs) leaks in;
- the wall-clock limit is enforced from outside, and killing takes the whole process tree;
- memory, pids and CPU are limited where the machine allows it;
- a run given ``cpuset`` runs on those cores only (its affinity mask is exactly them);
- stdout and stderr are captured, each capped at ``spec.output_cap_bytes``.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from edc.config import Settings
    from edc.sandbox.capture import CapturedOutput
    from edc.sandbox.runtime import DecoderRuntime

# Where things appear inside every sandbox, whatever the backend.
SUBMISSION_DIR = "/submission"  # the unpacked submission, read-only, the working directory
SCRATCH_DIR = "/tmp"  # writable, size-capped
MODEL_DIR = "/model"  # the task's model, read-only
CHANNEL_DIR = "/run/edc"  # the protocol channel (a unix socket the harness listens on)

LABEL_PREFIX = "edc."  # labels mark every sandbox so a restarted worker can find its leftovers


class ExitKind(enum.StrEnum):
    """How the sandboxed process tree ended."""

    EXITED = "exited"  # it exited by itself; ``exit_code`` says how
    TIMEOUT = "timeout"  # the wall-clock limit was reached and we killed it
    MEMORY_LIMIT = "memory_limit"  # the memory limit was hit (OOM kill)
    KILLED = "killed"  # it died from a signal we did not send for a limit, or we were told to stop


@dataclass(frozen=True)
class Mount:
    """A host path made visible inside the sandbox."""

    host: Path
    target: str  # absolute path inside the sandbox
    writable: bool = False


@dataclass(frozen=True)
class SandboxSpec:
    """Everything a backend needs to run one untrusted program."""

    argv: tuple[str, ...]  # the command inside the sandbox; argv[0] resolved inside it
    submission_dir: Path  # host dir mounted read-only at SUBMISSION_DIR and used as cwd
    env: Mapping[str, str] = field(default_factory=dict)  # the *whole* environment inside
    mounts: tuple[Mount, ...] = ()  # extra mounts (model, channel dir, ...)
    wall_timeout_s: float = 60.0  # measured from start, enforced from outside, then kill
    memory_mb: int = 1024  # address-space/cgroup memory limit
    pids_max: int = 128  # processes + threads
    cpus: float = 1.0  # CPU share (cores)
    cpuset: tuple[int, ...] = ()  # the cores the run is pinned to (the worker's); empty: unpinned
    scratch_mb: int = 256  # size of the writable /tmp
    output_cap_bytes: int = 64 * 1024  # kept per stream; the rest is dropped
    gpus: tuple[str, ...] = ()  # devices the run may use (CUDA_VISIBLE_DEVICES, device_requests)
    labels: Mapping[str, str] = field(default_factory=dict)  # e.g. submission id, worker id


@dataclass(frozen=True)
class SandboxResult:
    """What happened, as measured from outside the sandbox."""

    exit_kind: ExitKind
    exit_code: int | None  # the process's exit status when it exited; None when killed by us
    wall_s: float  # start to exit, by the host's monotonic clock
    peak_memory_bytes: int | None  # peak resident memory of the tree, where the backend can tell
    stdout: str  # decoded with errors="replace", at most output_cap_bytes
    stderr: str
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_kind is ExitKind.EXITED and self.exit_code == 0

    @classmethod
    def captured(
        cls,
        exit_kind: ExitKind,
        exit_code: int | None,
        *,
        wall_s: float,
        peak_memory_bytes: int | None,
        stdout: CapturedOutput,
        stderr: CapturedOutput,
    ) -> SandboxResult:
        """The result of a run whose two streams were captured (and maybe cut)."""
        return cls(
            exit_kind=exit_kind,
            exit_code=exit_code,
            wall_s=wall_s,
            peak_memory_bytes=peak_memory_bytes,
            stdout=stdout.text(),
            stderr=stderr.text(),
            stdout_truncated=stdout.truncated,
            stderr_truncated=stderr.truncated,
        )


class SandboxProcess(abc.ABC):
    """A started sandbox. ``wait`` enforces the spec's wall-clock limit from the start time."""

    @abc.abstractmethod
    def wait(self) -> SandboxResult:
        """Block until the tree exits or its wall-clock limit kills it; always cleans up."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Kill the whole tree now (idempotent). ``wait`` then reports ``KILLED``."""

    @abc.abstractmethod
    def poll(self) -> bool:
        """True while the sandbox is still running."""


class Sandbox(abc.ABC):
    """A backend. Instances are cheap and hold no run state."""

    name: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def from_settings(
        cls,
        settings: Settings,
        runtime: DecoderRuntime | None = None,
        private_dirs: Sequence[Path] = (),
    ) -> Sandbox:
        """Build the backend from the platform's settings (image, devices, ...) to offer the
        decoder ``runtime`` (default: the standard library and numpy). ``private_dirs`` (other
        tracks' task directories) stay out of reach like the configured task's, where a backend
        could otherwise show them."""

    @property
    @abc.abstractmethod
    def python(self) -> str:
        """The Python interpreter to put in ``argv`` to run Python inside this sandbox."""

    @classmethod
    @abc.abstractmethod
    def unavailable_reason(
        cls, settings: Settings | None = None, runtime: DecoderRuntime | None = None
    ) -> str | None:
        """None when this backend can run here, else a sentence saying why not and how to fix it.

        ``settings`` (default: the process's) names what the backend needs, e.g. the image;
        ``runtime`` what the task's decoders need (an image, an environment).
        """

    def identity(self) -> str:
        """What exactly runs submissions (an image digest, a tool version), for each result's
        provenance."""
        return self.name

    @abc.abstractmethod
    def describe_isolation(self) -> str:
        """One line on what confinement this backend gives on this machine, for the start log."""

    @abc.abstractmethod
    def start(self, spec: SandboxSpec) -> SandboxProcess:
        """Start ``spec`` confined; raises SandboxUnavailable if the backend cannot start it."""

    def run(self, spec: SandboxSpec) -> SandboxResult:
        return self.start(spec).wait()

    def seen_at(self, spec: SandboxSpec, path: str) -> str:
        """Where a run of ``spec`` finds the sandbox path ``path`` (a mount's target): there, in
        every real sandbox."""
        return path

    def remove_leftovers(self, labels: Mapping[str, str]) -> int:
        """Remove sandboxes a previous (killed) worker left behind; returns how many."""
        return 0

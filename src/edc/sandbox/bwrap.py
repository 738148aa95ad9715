"""The bubblewrap backend: daemon-less isolation from Linux namespaces, cgroups and rlimits.

What a run gets::

    namespaces   user (uid/gid 65534 inside, no nested user namespaces), pid, net (loopback only,
                 not the host's), ipc, uts (hostname ``sandbox``), cgroup, mount
    privileges   every capability dropped, no_new_privs, a new session (no terminal injection)
    filesystem   an empty read-only root holding only what a decoder needs:
                 - /usr read-only (and the /bin, /lib, ... links), a handful of /etc files
                   (linker cache, alternatives; passwd, group and hosts written for the
                   sandbox: none of the host's), /proc of the pid namespace, a minimal
                   read-only /dev with a small /dev/shm, /tmp as a tmpfs of ``scratch_mb``;
                 - the interpreter at the worker's own path (``python``): its base
                   installation's folders read-only where /usr does not hold them; for a venv
                   a link to the base interpreter, never the venv's folders;
                 - the decoder's runtime read-only at /opt/edc-libs, which is on PYTHONPATH:
                   the packages of the task's runtime environment (``runtime.py``), or
                   without one the worker's numpy (``DECODER_LIBRARIES``, with the
                   ``numpy.libs`` its wheel vendors) and nothing else;
                 - the submission read-only at /submission (the working directory) and the
                   spec's mounts (the model at /model, the channel at /run/edc).
                 Masked by an empty read-only tmpfs wherever a bound folder (/usr, the base
                 installation) holds them: every site-packages and dist-packages folder (the
                 platform's dependencies, and the platform once installed), the platform's
                 package with its install record, and ``private_dirs`` (the data and task
                 directories: ``from_settings``). So nothing of the platform, its uploads or its
                 hidden prompts is readable, however it is installed. /proc/self/mountinfo
                 still shows the host paths the binds come from (the submission's, the
                 model's, the channel's, numpy's, the masked folders'), never their contents.
    environment  exactly ``spec.env`` on top of PATH=/usr/local/bin:/usr/bin:/bin, HOME=/tmp,
                 LANG=C.UTF-8 and PYTHONPATH=/opt/edc-libs (after the spec's own, if any;
                 bubblewrap adds PWD); CUDA_VISIBLE_DEVICES naming ``spec.gpus`` by UUID,
                 whose device nodes alone are bound (with the driver's control devices:
                 ``gpus.py``)
    limits       memory, pids and CPU through per-run cgroups (see ``cgroups.py``) where they can
                 be written; otherwise RLIMIT_AS, RLIMIT_NPROC and RLIMIT_CPU (a warning says so
                 once; ``describe_isolation`` tells which). Core dumps off. The scratch and
                 /dev/shm tmpfs pages count against the memory cgroup.
    cores        ``spec.cpuset`` pins the run through a cgroup v1 cpuset (the program cannot leave
                 it); where cpuset cannot be written, through ``sched_setaffinity`` on the gated
                 process (inherited by all it starts, but a program may widen its own mask).
    measures     wall time by the host's monotonic clock; peak memory from the memory cgroup
                 (None without one: bubblewrap hands no rusage of its sandbox up); an OOM kill in
                 the cgroup makes a failed run ``MEMORY_LIMIT``.
    ending       the wall-clock limit is kept from outside; killing takes the cgroups (v2
                 ``cgroup.kill`` and a v1 sweep), bubblewrap itself, and with it the pid namespace,
                 whose every process the kernel kills when its init dies. A daemon dies with it.
                 If the worker dies, --die-with-parent and the worker's reaper (``reaper.py``)
                 take its sandboxes down, whatever the moment.

The sandboxed program starts only once it is inside its cgroups: bubblewrap is started through a
tiny ``sh`` gate that waits on stdin until the worker has moved it into the groups and set its
rlimits and, without a cpuset, its affinity (no ``preexec_fn``, which is unsafe in a threaded
worker).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import math
import os
import queue
import resource
import select
import shutil
import signal
import site
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from edc.config import Settings
from edc.errors import SandboxUnavailable
from edc.sandbox.base import (
    SCRATCH_DIR,
    SUBMISSION_DIR,
    ExitKind,
    Sandbox,
    SandboxProcess,
    SandboxResult,
    SandboxSpec,
)
from edc.sandbox.capture import StreamCapture
from edc.sandbox.cgroups import LIMIT_CONTROLLERS, CgroupLimits, RunCgroup, labels_of, run_name
from edc.sandbox.gpus import gpu_binds
from edc.sandbox.reaper import Reaper
from edc.sandbox.runtime import DEFAULT_RUNTIME, DecoderRuntime, site_packages

log = logging.getLogger(__name__)

INSTALL_HINT = "install it with `apt-get install -y bubblewrap`"
SANDBOX_UID = 65534
DEFAULT_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": SCRATCH_DIR, "LANG": "C.UTF-8"}
SHM_MAX_MB = 64
# What a decoder may import besides the standard library when the task names no runtime
# environment: nothing else of the worker's Python environment enters the sandbox.
DECODER_LIBRARIES = ("numpy",)
# Where those libraries appear inside, a neutral folder the backend puts on PYTHONPATH.
LIBRARIES_DIR = "/opt/edc-libs"
# Folders where an interpreter keeps third-party packages; every one a bound folder holds is
# masked, so the platform's dependencies (and the platform, once installed) stay outside.
SITE_DIR_NAMES = ("site-packages", "dist-packages")
# The platform's own package: its code and the bundled task, hidden prompts included.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
# Host /etc entries a program needs and that hold no secrets.
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime")
# Merged-/usr systems link these into /usr; elsewhere they are bound read-only.
TOP_LEVEL_SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# Waits on stdin for the worker's go, then becomes bubblewrap with stdin on /dev/null.
GATE_SCRIPT = 'read -r _ || exit 125; exec "$@" </dev/null'
GATE_REFUSED = 125
_CAPTURE_JOIN_S = 5.0
# How a command ends when its RLIMIT_CPU soft limit runs out (the hard one, 1 s later, SIGKILLs).
_CPU_RLIMIT_EXIT = 128 + signal.SIGXCPU


@dataclass(frozen=True)
class Layout:
    """What a run sees besides the system folders, /tmp, the submission and the spec's mounts."""

    python_dirs: tuple[Path, ...]  # the interpreter's folders (or files), read-only at their path
    links: tuple[tuple[str, str], ...]  # (target, path inside): symlinks made in the sandbox
    libraries: tuple[tuple[Path, str], ...]  # (host path, path inside), read-only
    hidden_dirs: tuple[Path, ...]  # paths inside, each masked by an empty read-only tmpfs


class BwrapSandbox(Sandbox):
    name = "bwrap"
    executable: ClassVar[str] = "bwrap"

    def __init__(
        self,
        *,
        use_cgroups: bool = True,
        private_dirs: Iterable[Path] = (),
        libraries: Sequence[str] = DECODER_LIBRARIES,
        runtime: DecoderRuntime | None = None,
    ) -> None:
        # use_cgroups=False forces the rlimit fallbacks (for machines without writable cgroups).
        self.use_cgroups = use_cgroups
        # Hidden wherever a bound folder holds them (besides the platform's package, always).
        self.private_dirs = tuple(Path(path).absolute() for path in private_dirs)
        self.runtime = runtime or DEFAULT_RUNTIME
        # A runtime environment replaces the worker's libraries: its packages, nothing else.
        self.libraries = () if self.runtime.env_dir else tuple(libraries)
        self._fallback_reported = False

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        runtime: DecoderRuntime | None = None,
        private_dirs: Sequence[Path] = (),
    ) -> BwrapSandbox:
        """Hides the data directories, the task directory (the bundled task is inside the
        package, hidden anyway) and ``private_dirs``."""
        return cls(private_dirs=[*_private_dirs(settings), *private_dirs], runtime=runtime)

    @property
    def python(self) -> str:
        """The worker's interpreter path; inside, it has its standard library and the decoder
        libraries only."""
        return sys.executable

    def layout(self) -> Layout:
        """What of the worker's files a run sees (computed per run: folders come and go)."""
        python_dirs, links = _interpreter()
        bound = [*_system_dirs(), *python_dirs]
        hidden = _hidden_dirs(bound, [*_site_dirs(), *_platform_dirs(), *self.private_dirs])
        if self.runtime.env_dir:
            libraries: tuple[tuple[Path, str], ...] = (
                (_runtime_packages(self.runtime.env_dir, self.private_dirs), LIBRARIES_DIR),
            )
        else:
            libraries = _library_binds(self.libraries)
        return Layout(
            python_dirs=tuple(python_dirs),
            links=tuple(links),
            libraries=libraries,
            hidden_dirs=tuple(hidden),
        )

    @classmethod
    def unavailable_reason(
        cls, settings: Settings | None = None, runtime: DecoderRuntime | None = None
    ) -> str | None:
        exe = shutil.which(cls.executable)
        if exe is None:
            return f"bubblewrap ({cls.executable}) is not installed; {INSTALL_HINT}."
        argv = [exe, *_namespace_args(), *_system_args(), "--", "/bin/true"]
        try:
            probe = subprocess.run(argv, capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bubblewrap could not be started ({exc}); {INSTALL_HINT}."
        if probe.returncode != 0:
            why = probe.stderr.decode(errors="replace").strip() or f"exit {probe.returncode}"
            return (
                f"bubblewrap is installed but cannot create a sandbox here ({why}); it needs "
                "root or unprivileged user namespaces (sysctl user.max_user_namespaces > 0)."
            )
        if runtime and runtime.env_dir:
            try:
                _runtime_packages(runtime.env_dir, _private_dirs(settings))
            except SandboxUnavailable as exc:
                return exc.message
        return None

    def start(self, spec: SandboxSpec) -> BwrapProcess:
        exe = shutil.which(self.executable)
        if exe is None:
            raise SandboxUnavailable(f"bubblewrap is not installed; {INSTALL_HINT}.")
        limits = CgroupLimits(
            memory_bytes=spec.memory_mb * 1024 * 1024,
            pids_max=spec.pids_max,
            cpus=spec.cpus,
            cpuset=spec.cpuset,
        )
        name = run_name(uuid.uuid4().hex[:16], spec.labels)
        reaper = _Spawner.for_this_process().reaper
        try:
            reaper.register(name)  # before the cgroups exist: they must not outlive the worker
        except OSError as exc:
            raise SandboxUnavailable(f"The sandbox reaper could not be started: {exc}.") from exc
        cgroup = RunCgroup.create(name, limits) if self.use_cgroups else RunCgroup(name)
        try:
            layout = self.layout()
            process = BwrapProcess(
                exe,
                spec,
                cgroup,
                python_dirs=layout.python_dirs,
                hidden_dirs=layout.hidden_dirs,
                links=layout.links,
                libraries=layout.libraries,
            )
        except BaseException:
            cgroup.kill()
            cgroup.remove()
            with contextlib.suppress(OSError):
                reaper.unregister(name)
            raise
        if (
            self.use_cgroups
            and not self._fallback_reported
            and (cgroup.limited != set(LIMIT_CONTROLLERS) or (spec.cpuset and not cgroup.pinned))
        ):
            self._fallback_reported = True
            log.warning(
                "bwrap sandbox: cgroups cannot enforce every limit here; in use: %s",
                ", ".join(f"{k} via {v}" for k, v in _limit_methods(cgroup, spec).items()),
            )
        return process

    def remove_leftovers(self, labels: Mapping[str, str]) -> int:
        """Kill and remove the run cgroups (under this worker's group) whose labels match."""
        removed = 0
        for group in RunCgroup.existing():
            if labels.items() <= labels_of(group.name).items():
                group.kill()
                group.remove()
                removed += 1
        return removed

    def identity(self) -> str:
        """bubblewrap's version and the interpreter submissions run with."""
        exe = shutil.which(self.executable) or self.executable
        try:
            version = subprocess.run(
                [exe, "--version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except OSError:
            version = "bubblewrap (version unknown)"
        python = ".".join(str(part) for part in sys.version_info[:3])
        runtime = f"; runtime {self.runtime.env_dir}" if self.runtime.env_dir else ""
        return f"{version}; python {python} at {self.python}{runtime}"

    def describe_isolation(self) -> str:
        """One line saying how runs are confined on this machine (probes the cgroups)."""
        probe = RunCgroup(run_name("probe-" + uuid.uuid4().hex[:8], {}))
        # One core this process may use: enough to see whether a cpuset can be made here.
        core = min(os.sched_getaffinity(0))
        if self.use_cgroups:
            limits = CgroupLimits(64 * 1024 * 1024, 64, 1.0, cpuset=(core,))
            probe = RunCgroup.create(probe.name, limits)
        try:
            methods = _limit_methods(probe, pinned=True)
            kill = "cgroup v2 cgroup.kill, " if "unified" in probe.dirs else ""
            if probe.can_kill:
                kill += "cgroup v1 sweep, "
        finally:
            probe.remove()
        return (
            "user/pid/net/ipc/uts/cgroup/mount namespaces, all capabilities dropped, "
            "no_new_privs, read-only system, standard library and "
            + (
                f"the runtime {self.runtime.env_dir}"
                if self.runtime.env_dir
                else ", ".join(self.libraries) or "no libraries"
            )
            + " only (site-packages and the platform's folders masked), tmpfs scratch; "
            + "; ".join(f"{limit}: {how}" for limit, how in methods.items())
            + f"; kill: {kill}pid namespace teardown"
        )


class BwrapProcess(SandboxProcess):
    """One running bubblewrap sandbox."""

    def __init__(
        self,
        exe: str,
        spec: SandboxSpec,
        cgroup: RunCgroup,
        *,
        python_dirs: Sequence[Path],
        hidden_dirs: Sequence[Path] = (),
        links: Sequence[tuple[str, str]] = (),
        libraries: Sequence[tuple[Path, str]] = (),
    ) -> None:
        self._spec = spec
        self._cgroup = cgroup
        self._lock = threading.Lock()  # guards reaping against a concurrent kill()
        self._wait_lock = threading.Lock()
        self._reaped = False
        self._kill_requested = False
        self._timed_out = False
        self._result: SandboxResult | None = None

        status_read, status_write = os.pipe()
        data_fds: list[int] = []
        try:
            argv = [exe, "--json-status-fd", str(status_write), *_namespace_args()]
            argv += _system_args()
            for target, content in _etc_files().items():
                data_fds.append(_data_pipe(content))
                argv += ["--ro-bind-data", str(data_fds[-1]), target]
            argv += _sandbox_args(spec, python_dirs, hidden_dirs, links, libraries)
            argv += ["--", *spec.argv]
            self._started = time.monotonic()
            spawner = _Spawner.for_this_process()
            self._reaper = spawner.reaper
            self._popen = spawner.popen(
                ["/bin/sh", "-c", GATE_SCRIPT, "edc-sandbox", *argv],
                pass_fds=(status_write, *data_fds),
            )
        except BaseException as exc:
            os.close(status_read)
            if isinstance(exc, OSError):
                raise SandboxUnavailable(f"bubblewrap could not be started: {exc}.") from exc
            raise
        finally:
            os.close(status_write)
            for fd in data_fds:
                os.close(fd)
        self._status_read = status_read
        self._pidfd = os.pidfd_open(self._popen.pid)
        assert self._popen.stdout is not None and self._popen.stderr is not None
        cap = spec.output_cap_bytes
        self._stdout = StreamCapture(self._popen.stdout, cap, name="sandbox-stdout").start()
        self._stderr = StreamCapture(self._popen.stderr, cap, name="sandbox-stderr").start()
        try:
            self._release_gate()
        except OSError as exc:
            self._popen.kill()
            self._popen.wait()
            self._reaped = True
            self._stdout.result(_CAPTURE_JOIN_S)
            self._stderr.result(_CAPTURE_JOIN_S)
            os.close(self._pidfd)
            os.close(self._status_read)
            raise SandboxUnavailable(f"The sandbox could not be confined: {exc}.") from exc

    def _release_gate(self) -> None:
        pid = self._popen.pid
        self._reaper.register(self._cgroup.name, pid)  # the gate leads its own process group
        self._cgroup.join(pid)
        _set_rlimits(pid, self._spec, self._cgroup.limited)
        if self._spec.cpuset and not self._cgroup.pinned:
            # Before the go: bubblewrap and everything it starts inherit the mask.
            os.sched_setaffinity(pid, self._spec.cpuset)
        log.debug(
            "sandbox %s: pid %d, %s",
            self._cgroup.name,
            pid,
            ", ".join(f"{k} via {v}" for k, v in _limit_methods(self._cgroup, self._spec).items()),
        )
        stdin = self._popen.stdin
        assert stdin is not None
        try:
            stdin.write(b"go\n")
            stdin.close()
        except BrokenPipeError:
            pass  # the gate died; wait() reports what happened

    def poll(self) -> bool:
        with self._lock:
            if self._reaped:
                return False
            # poll(), not select(): a worker may hold more than FD_SETSIZE descriptors.
            poller = select.poll()
            poller.register(self._pidfd, select.POLLIN)
            return not poller.poll(0)

    def kill(self) -> None:
        with self._lock:
            if self._reaped:
                return
            self._kill_requested = True
            self._kill_tree()

    def wait(self) -> SandboxResult:
        with self._wait_lock:
            if self._result is None:
                self._result = self._wait()
            return self._result

    def _wait(self) -> SandboxResult:
        deadline = self._started + self._spec.wall_timeout_s
        poller = select.poll()
        poller.register(self._pidfd, select.POLLIN)
        while not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
            if time.monotonic() >= deadline:
                with self._lock:
                    self._timed_out = not self._kill_requested
                    self._kill_tree()
                poller.poll()
                break
        with self._lock:
            _, status = os.waitpid(self._popen.pid, 0)
            ended = time.monotonic()
            self._reaped = True
            self._popen.returncode = os.waitstatus_to_exitcode(status)
            os.close(self._pidfd)
        try:
            result = self._collect(status, wall_s=ended - self._started)
        finally:
            self._cgroup.kill()
            self._cgroup.remove()
            os.close(self._status_read)
            with contextlib.suppress(OSError):
                self._reaper.unregister(self._cgroup.name)
        return result

    def _kill_tree(self) -> None:
        """Kill everything (caller holds the lock and has not reaped bubblewrap yet)."""
        self._cgroup.kill()
        # bubblewrap's group and itself: its pid namespace dies with it (die-with-parent).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def _collect(self, status: int, *, wall_s: float) -> SandboxResult:
        # Leftovers (a daemon outside the namespace cannot exist, but be sure) must let go of
        # the pipes before their readers can finish.
        self._cgroup.kill()
        stdout = self._stdout.result(_CAPTURE_JOIN_S)
        stderr = self._stderr.result(_CAPTURE_JOIN_S)
        command_exit = _command_exit_code(self._status_read)
        oom = self._cgroup.oom_kills() > 0
        # Only a memory cgroup can tell: bubblewrap does not hand its sandbox's rusage up, and
        # its own starts with the worker's peak inherited at spawn.
        peak = self._cgroup.peak_memory_bytes()
        code: int | None = None
        if self._timed_out:
            kind = ExitKind.TIMEOUT
        elif self._kill_requested:
            kind = ExitKind.KILLED
        elif oom and command_exit != 0:
            kind = ExitKind.MEMORY_LIMIT
        elif command_exit == _CPU_RLIMIT_EXIT and "cpu" not in self._cgroup.limited:
            kind = ExitKind.TIMEOUT  # the RLIMIT_CPU fallback: out of CPU seconds
        elif command_exit is not None:
            kind, code = ExitKind.EXITED, command_exit
        elif os.WIFSIGNALED(status):
            kind = ExitKind.KILLED  # someone else killed bubblewrap
        elif os.waitstatus_to_exitcode(status) == GATE_REFUSED:
            raise SandboxUnavailable("The sandbox gate was closed before the run could start.")
        else:
            # The command never ran: this is bubblewrap's own complaint.
            message = stderr.text().strip()
            if "execvp" in message:
                kind, code = ExitKind.EXITED, os.waitstatus_to_exitcode(status)
            else:
                raise SandboxUnavailable(f"bubblewrap could not set up the sandbox: {message}")
        return SandboxResult.captured(
            kind,
            code,
            wall_s=wall_s,
            peak_memory_bytes=peak,
            stdout=stdout,
            stderr=stderr,
        )


class _Spawner:
    """Starts sandboxes from one thread that lives as long as the process; holds its reaper.

    bubblewrap's --die-with-parent (PR_SET_PDEATHSIG) fires when the *thread* that forked it
    exits: a sandbox started from a short-lived thread would be killed with that thread. And it
    has a gap at start-up, which the reaper (``reaper.py``) closes.
    """

    _lock = threading.Lock()
    _current: ClassVar[_Spawner | None] = None
    _inherited: ClassVar[list[_Spawner]] = []  # kept: their reaper belongs to a parent process

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.reaper = Reaper()
        self._requests: queue.SimpleQueue[_SpawnRequest] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="edc-sandbox-spawner", daemon=True)
        self._thread.start()

    @classmethod
    def for_this_process(cls) -> _Spawner:
        with cls._lock:
            # A forked worker inherits the object but not its thread, and needs its own reaper.
            if cls._current is not None and cls._current.pid != os.getpid():
                cls._current.reaper.let_go()
                cls._inherited.append(cls._current)
                cls._current = None
            if cls._current is None:
                cls._current = cls()
            return cls._current

    def popen(self, argv: list[str], *, pass_fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
        request = _SpawnRequest(argv, pass_fds)
        self._requests.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.popen is not None
        return request.popen

    def _serve(self) -> None:
        while True:
            request = self._requests.get()
            try:
                request.popen = subprocess.Popen(
                    request.argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=request.pass_fds,
                    start_new_session=True,
                    env={"PATH": DEFAULT_ENV["PATH"]},
                )
            except BaseException as exc:  # handed to the caller
                request.error = exc
            request.done.set()


class _SpawnRequest:
    def __init__(self, argv: list[str], pass_fds: tuple[int, ...]) -> None:
        self.argv = argv
        self.pass_fds = pass_fds
        self.popen: subprocess.Popen[bytes] | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


def _namespace_args() -> list[str]:
    return [
        "--unshare-all",
        "--unshare-user",  # --unshare-all only tries; we insist (and it enables the next line)
        "--disable-userns",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--hostname",
        "sandbox",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ]


def _system_dirs() -> list[Path]:
    """The host folders bound at their own path by ``_system_args``."""
    dirs = [Path("/usr")]
    for name in TOP_LEVEL_SYSTEM_DIRS:
        host = Path("/") / name
        if host.is_dir() and not host.is_symlink():
            dirs.append(host)
    return dirs


def _system_args() -> list[str]:
    argv = ["--ro-bind", "/usr", "/usr"]
    for name in TOP_LEVEL_SYSTEM_DIRS:
        host = Path("/") / name
        if host.is_symlink():
            argv += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), str(host)]
    for name in ETC_FILES:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    return argv


def _sandbox_args(
    spec: SandboxSpec,
    python_dirs: Sequence[Path],
    hidden_dirs: Sequence[Path],
    links: Sequence[tuple[str, str]] = (),
    libraries: Sequence[tuple[Path, str]] = (),
) -> list[str]:
    argv = ["--clearenv"]
    env = {**DEFAULT_ENV, **spec.env}
    if libraries:
        given = spec.env.get("PYTHONPATH")
        env["PYTHONPATH"] = f"{given}:{LIBRARIES_DIR}" if given else LIBRARIES_DIR
    # Only the run's own GPUs' nodes (and the driver's control devices): see ``gpus.py``.
    gpu = gpu_binds(spec.gpus, _system_dirs())
    if spec.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu.visible)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the driver's order, which EDC_GPUS counts in
    for key, value in env.items():
        argv += ["--setenv", key, value]
    for device in gpu.devices:
        argv += ["--dev-bind", str(device), str(device)]
    shm_bytes = min(spec.scratch_mb, SHM_MAX_MB) * 1024 * 1024
    argv += ["--perms", "1777", "--size", str(shm_bytes), "--tmpfs", "/dev/shm"]
    argv += ["--remount-ro", "/dev"]
    # The scratch first, so that binds below /tmp (an interpreter, a mount) land on top of it.
    scratch_bytes = spec.scratch_mb * 1024 * 1024
    argv += ["--perms", "1777", "--size", str(scratch_bytes), "--tmpfs", SCRATCH_DIR]
    for path in python_dirs:
        argv += ["--ro-bind", str(path), str(path)]
    for target, link in links:
        argv += ["--symlink", target, link]
    for host, inside in libraries:
        argv += ["--ro-bind", str(host), inside]
    for driver_file in gpu.libraries:
        argv += ["--ro-bind", str(driver_file), str(driver_file)]
    # After the binds they cover; a mask inside another is already hidden (and could not be
    # mounted on the read-only tmpfs).
    for path in _outermost(hidden_dirs):
        argv += ["--size", "4096", "--tmpfs", str(path), "--remount-ro", str(path)]
    argv += ["--ro-bind", os.path.abspath(spec.submission_dir), SUBMISSION_DIR]
    for mount in spec.mounts:
        if not mount.target.startswith("/"):
            raise ValueError(f"mount target must be absolute: {mount.target!r}")
        kind = "--bind" if mount.writable else "--ro-bind"
        argv += [kind, os.path.abspath(mount.host), mount.target]
    argv += ["--remount-ro", "/", "--chdir", SUBMISSION_DIR]
    return argv


def _python_dirs() -> list[Path]:
    """The interpreter's base installation (standard library, shared libraries), where /usr does
    not already hold it. Never a venv's folders: their packages are the platform's."""
    dirs: list[Path] = []
    for raw in (sys.base_prefix, sys.base_exec_prefix):
        path = Path(raw)
        if path in dirs or any(path.is_relative_to(d) for d in _system_dirs()):
            continue
        dirs.append(path)
    return dirs


def _interpreter() -> tuple[list[Path], list[tuple[str, str]]]:
    """What is bound (``_python_dirs`` and maybe more) and linked so that ``sys.executable``
    runs inside: a venv's interpreter is a link to the base one, or (a copy) the copy itself
    with its pyvenv.cfg, which names where the standard library is."""
    dirs = _python_dirs()
    bound = [d.resolve() for d in [*_system_dirs(), *dirs]]
    exe = Path(sys.executable)
    if any(exe.parent.resolve().is_relative_to(d) for d in bound):
        return dirs, []
    real = exe.resolve()
    if any(real.is_relative_to(d) for d in bound):
        return dirs, [(str(real), str(exe))]
    config = Path(sys.prefix) / "pyvenv.cfg"
    return [*dirs, exe, *([config] if config.is_file() else [])], []


def _site_dirs() -> list[Path]:
    """Every folder where an interpreter of this machine keeps third-party packages: the
    worker's own (venv, base, user), /usr's and /usr/local's (any Python version), and any on
    ``sys.path`` (a PYTHONPATH into one)."""
    prefixes = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    prefixes |= {"/usr", "/usr/local"}
    found = [*site.getsitepackages(sorted(prefixes)), site.getusersitepackages(), *sys.path]
    for prefix in sorted(prefixes):
        for name in SITE_DIR_NAMES:
            found += [str(p) for p in Path(prefix).glob(f"lib*/python3*/{name}")]
    dirs: list[Path] = []
    for raw in found:
        path = Path(raw)
        if path.name in SITE_DIR_NAMES and path.is_dir() and path not in dirs:
            dirs.append(path)
    return dirs


def _platform_dirs() -> list[Path]:
    """The platform's package and the installation's record beside it (a file list with
    hashes), wherever it is installed."""
    parent = PACKAGE_DIR.parent
    return [PACKAGE_DIR, *parent.glob("edc-*.dist-info"), *parent.glob("edc.egg-info")]


def _hidden_dirs(bound: Sequence[Path], private: Sequence[Path] = (PACKAGE_DIR,)) -> list[Path]:
    """Where the ``private`` folders appear inside the sandbox: at each folder of ``bound``
    (bound at its own path) that holds one. Those no bound folder holds are out of reach."""
    hidden: list[Path] = []
    for folder in bound:
        root = folder.resolve()
        for path in private:
            real = path.resolve()
            if not real.is_dir() or not real.is_relative_to(root):
                continue
            # Inside the sandbox the folder sits at its unresolved path.
            inside = folder / real.relative_to(root)
            if inside not in hidden:
                hidden.append(inside)
    return hidden


def _outermost(paths: Sequence[Path]) -> list[Path]:
    kept: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return kept


def _private_dirs(settings: Settings | None) -> list[Path]:
    """The platform's data and task directories: hidden wherever a bound folder holds them."""
    if settings is None:
        return []
    private = (settings.data_dir, settings.shared_data_dir, settings.task_dir)
    return [Path(path).absolute() for path in private if path is not None]


def _runtime_packages(env_dir: Path, private: Sequence[Path] = ()) -> Path:
    """The runtime environment's package folder, refused when it holds or sits inside any of the
    worker's own package folders, the platform's, or the ``private`` ones (data, task): bound
    whole, it would show them."""
    folder = site_packages(env_dir).resolve()
    # A folder inside the worker's packages is some of them; one inside a task directory (the
    # task's own runtime) shows only itself.
    inside_refused = [*_site_dirs(), *_platform_dirs()]
    for own in [*inside_refused, *private]:
        mine = own.resolve()
        inside = folder.is_relative_to(mine) and own in inside_refused
        if folder == mine or inside or mine.is_relative_to(folder):
            raise SandboxUnavailable(
                f"The task's runtime environment {env_dir} overlaps {own} (the worker's own "
                "Python packages, the platform or its data), which never enter the sandbox; "
                "build a separate one with `edc env build`."
            )
    return folder


@functools.cache
def _library_binds(names: tuple[str, ...]) -> tuple[tuple[Path, str], ...]:
    """Each library's package folder (or module file), and the folder of shared libraries its
    wheel vendors beside it (``numpy.libs``), bound under LIBRARIES_DIR."""
    binds: list[tuple[Path, str]] = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or not (spec.origin or spec.submodule_search_locations):
            raise SandboxUnavailable(
                f"The decoder library {name} is not installed for the worker's interpreter "
                f"({sys.executable}); install it there."
            )
        if spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations)))
        else:
            assert spec.origin is not None
            path = Path(spec.origin)
        binds.append((path, f"{LIBRARIES_DIR}/{path.name}"))
        vendored = path.parent / f"{name}.libs"
        if vendored.is_dir():
            binds.append((vendored, f"{LIBRARIES_DIR}/{vendored.name}"))
    return tuple(binds)


def _etc_files() -> dict[str, bytes]:
    """Account and host files written for the sandbox, so none of the host's leak in."""
    uid = SANDBOX_UID
    return {
        "/etc/passwd": (
            f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"nobody:x:{uid}:{uid}:nobody:{SCRATCH_DIR}:/usr/sbin/nologin\n"
        ).encode(),
        "/etc/group": f"root:x:0:\nnogroup:x:{uid}:\n".encode(),
        "/etc/hosts": b"127.0.0.1 localhost sandbox\n::1 localhost\n",
    }


def _data_pipe(content: bytes) -> int:
    """A pipe's read end already holding ``content`` (small: it fits the pipe buffer)."""
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, content)
    finally:
        os.close(write_fd)
    return read_fd


def _set_rlimits(pid: int, spec: SandboxSpec, cgroup_limited: frozenset[str]) -> None:
    limits = {resource.RLIMIT_CORE: (0, 0)}
    if "memory" not in cgroup_limited:
        memory = spec.memory_mb * 1024 * 1024
        limits[resource.RLIMIT_AS] = (memory, memory)
    if "pids" not in cgroup_limited:
        limits[resource.RLIMIT_NPROC] = (spec.pids_max, spec.pids_max)
    if "cpu" not in cgroup_limited:
        # SIGXCPU at the soft limit tells a CPU-limit death apart from other kills.
        seconds = _cpu_rlimit_s(spec)
        limits[resource.RLIMIT_CPU] = (seconds, seconds + 1)
    for which, (soft, hard) in limits.items():
        _, current_hard = resource.prlimit(pid, which)
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        resource.prlimit(pid, which, (soft, hard))


# The kernel never applies RLIMIT_NPROC to the host's root user, which the sandbox's uid maps to
# when the worker runs as root: then only the wall-clock limit ends a fork bomb.
_NPROC_FALLBACK = (
    "RLIMIT_NPROC" if os.geteuid() != 0 else "none (RLIMIT_NPROC has no effect on root)"
)


def _cpu_rlimit_s(spec: SandboxSpec) -> int:
    # No throttling without a cgroup: only a budget of CPU seconds, the share over the wall limit.
    return math.ceil(spec.wall_timeout_s * spec.cpus) + 1


def _limit_methods(
    cgroup: RunCgroup, spec: SandboxSpec | None = None, *, pinned: bool = False
) -> dict[str, str]:
    """How each limit is enforced; ``cores`` too when the run is pinned (``spec.cpuset``)."""
    limited = cgroup.limited
    methods = {
        "memory": "cgroup v1 (OOM kill -> memory_limit)" if "memory" in limited else "RLIMIT_AS",
        "pids": "cgroup v1 pids.max" if "pids" in limited else _NPROC_FALLBACK,
        "cpu": "cgroup v1 CFS quota" if "cpu" in limited else "RLIMIT_CPU (total seconds)",
    }
    if pinned or (spec is not None and spec.cpuset):
        methods["cores"] = (
            "cgroup v1 cpuset"
            if cgroup.pinned
            else "sched_setaffinity (inherited; a program may widen its own mask)"
        )
    return methods


def _command_exit_code(status_fd: int) -> int | None:
    """The sandboxed command's exit code from bubblewrap's status stream, None if it never ran."""
    os.set_blocking(status_fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(status_fd, 4096):
            chunks.append(chunk)
    for line in b"".join(chunks).decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and "exit-code" in record:
                return int(record["exit-code"])
    return None

"""The Docker backend: every run in a fresh sibling container, confined by the engine.

The worker talks to the host's engine over its socket (``/var/run/docker.sock``, mounted into the
worker in compose), so bind paths are *host* paths. Each container gets: no network, a read-only
image, a size-capped ``/tmp`` as the only writable place besides the spec's writable mounts, no
capabilities, ``no-new-privileges``, uid/gid 65534, memory (without swap), pids and CPU limits,
the spec's cores (``cpuset_cpus``), the spec's GPUs through ``device_requests``, and ``edc.*``
labels so a restarted worker can find what a killed one left behind. The wall-clock limit is
enforced from here (wait, then kill) and the container is removed whatever happens, also when the
waiting thread is interrupted.

Peak memory: where this process sees the engine's cgroup v1 memory hierarchy (a worker on the host
with the ``cgroupfs`` driver) each container gets its own parent cgroup, whose
``memory.max_usage_in_bytes`` still holds the exact peak after the container is gone. Elsewhere
(a worker inside compose) the engine's stats are sampled while the container runs: a lower bound
that misses the last fraction of a second, and None for very short runs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import docker
import docker.errors
import docker.utils
import requests.exceptions
import urllib3.exceptions
from docker.constants import DEFAULT_UNIX_SOCKET
from docker.models.containers import Container
from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

from edc.errors import SandboxUnavailable
from edc.sandbox.base import (
    LABEL_PREFIX,
    SCRATCH_DIR,
    SUBMISSION_DIR,
    ExitKind,
    Sandbox,
    SandboxProcess,
    SandboxResult,
    SandboxSpec,
)
from edc.sandbox.capture import CappedBuffer, CapturedOutput
from edc.sandbox.runtime import DecoderRuntime

if TYPE_CHECKING:
    from edc.config import Settings

IMAGE_PYTHON = "/usr/local/bin/python3"  # where both sandbox images put their interpreter
BUILD_SCRIPT = "deploy/sandbox-image/build.sh"
SANDBOX_USER = "65534:65534"  # nobody:nogroup, present in both images
SANDBOX_LABEL = f"{LABEL_PREFIX}sandbox"  # marks every container this backend starts
CGROUP_LABEL = f"{LABEL_PREFIX}cgroup-parent"  # the run's parent cgroup, removed with it
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": SCRATCH_DIR, "LANG": "C.UTF-8"}
SHM_MAX_MB = 64

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "edc-sandbox"  # per-run parents live under /sys/fs/cgroup/<controller>/edc-sandbox
STATS_INTERVAL_S = 0.25
OUTPUT_DRAIN_S = 5.0  # how long output may keep arriving after the container has exited
SIGKILL_EXIT = 128 + 9
OOM_EVENT_GRACE_S = 0.5  # how long the engine may take to record an OOM kill after the exit
KILL_WAIT_S = 30.0  # how long a kill may take before the engine is considered broken
RESPONSES_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


def sandbox_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The container labels for ``labels``: each under the ``edc.`` prefix, plus the marker."""
    prefixed = {
        key if key.startswith(LABEL_PREFIX) else f"{LABEL_PREFIX}{key}": value
        for key, value in labels.items()
    }
    return {**prefixed, SANDBOX_LABEL: "true"}


def container_options(spec: SandboxSpec) -> dict[str, Any]:
    """The keyword arguments for ``containers.create`` (besides image and command) for ``spec``."""
    mounts = [
        Mount(SUBMISSION_DIR, str(spec.submission_dir.resolve()), type="bind", read_only=True)
    ]
    mounts += [
        Mount(m.target, str(m.host.resolve()), type="bind", read_only=not m.writable)
        for m in spec.mounts
    ]
    memory = f"{spec.memory_mb}m"
    options: dict[str, Any] = {
        "environment": {**BASE_ENV, **spec.env},
        "working_dir": SUBMISSION_DIR,
        "user": SANDBOX_USER,
        "hostname": "sandbox",
        "network_mode": "none",
        "read_only": True,
        # Docker's tmpfs default is noexec; compiled kernels and JIT caches need exec.
        "tmpfs": {SCRATCH_DIR: f"rw,exec,nosuid,nodev,size={spec.scratch_mb}m,mode=1777"},
        # A private, small /dev/shm (multiprocessing needs one), charged to the memory limit.
        "ipc_mode": "private",
        "shm_size": f"{min(spec.scratch_mb, SHM_MAX_MB)}m",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "mem_limit": memory,
        "memswap_limit": memory,  # equal: no swap on top of the memory limit
        "pids_limit": spec.pids_max,
        "nano_cpus": int(spec.cpus * 1e9),
        # Under host memory pressure the sandbox dies first, and crashes dump no cores.
        "oom_score_adj": 1000,
        "ulimits": [Ulimit(name="core", soft=0, hard=0)],
        # Output is read through an attached stream only: nothing of it is written to disk.
        "log_config": LogConfig(type="none"),
        "labels": sandbox_labels(spec.labels),
        "mounts": mounts,
    }
    if spec.cpuset:
        options["cpuset_cpus"] = ",".join(str(core) for core in spec.cpuset)
    if spec.gpus:
        options["device_requests"] = [
            DeviceRequest(device_ids=list(spec.gpus), capabilities=[["gpu"]])
        ]
    return options


class DockerSandbox(Sandbox):
    """Runs each spec in a new container of ``image`` on the engine ``docker.from_env`` finds."""

    name: ClassVar[str] = "docker"

    def __init__(self, image: str = "edc-sandbox:latest") -> None:
        self.image = image
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        self._host_cgroups: bool | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        runtime: DecoderRuntime | None = None,
        private_dirs: Sequence[Path] = (),  # nothing of the host is shown but what is bound
    ) -> DockerSandbox:
        """Runs start from the task's runtime image, else from ``EDC_SANDBOX_IMAGE``."""
        return cls(image=_image(settings, runtime))

    @property
    def python(self) -> str:
        return IMAGE_PYTHON

    @classmethod
    def unavailable_reason(
        cls, settings: Settings | None = None, runtime: DecoderRuntime | None = None
    ) -> str | None:
        """None when the engine answers and the sandbox image (the runtime's, else the
        configured one) exists."""
        if settings is None:
            from edc.config import get_settings

            settings = get_settings()
        image = _image(settings, runtime)
        try:
            client = _connect(timeout_s=10)
        except SandboxUnavailable as exc:
            return exc.message
        try:
            client.ping()
            client.images.get(image)
        except docker.errors.ImageNotFound:
            if runtime and runtime.image:
                return (
                    f"The task's runtime image {image} is missing on this engine: build or load "
                    "it here (`docker load`, `docker build`) before the worker starts."
                )
            return (
                f"The sandbox image {image} is missing: build it with {BUILD_SCRIPT} "
                "(or set EDC_SANDBOX_IMAGE to an image the engine has)."
            )
        except RESPONSES_ERRORS as exc:
            return _engine_down_sentence(exc)
        finally:
            client.close()
        return None

    def start(self, spec: SandboxSpec) -> SandboxProcess:
        _grant_sandbox_access(spec.submission_dir, writable=False)
        for mount in spec.mounts:
            _grant_sandbox_access(mount.host, writable=mount.writable)
        client = self._docker()
        options = container_options(spec)
        run_id = uuid.uuid4().hex[:12]
        cgroup: _RunCgroup | None = None
        if self._sees_host_cgroups(client):
            cgroup = _RunCgroup(f"/{CGROUP_PARENT}/{run_id}")
            options["cgroup_parent"] = cgroup.parent
            options["labels"][CGROUP_LABEL] = cgroup.parent
        try:
            container = client.containers.create(
                self.image, list(spec.argv), name=f"edc-sandbox-{run_id}", **options
            )
        except docker.errors.ImageNotFound as exc:
            raise SandboxUnavailable(
                f"The sandbox image {self.image} is missing: build it with {BUILD_SCRIPT}."
            ) from exc
        except docker.errors.APIError as exc:
            raise SandboxUnavailable(
                f"The Docker engine refused to create the sandbox: {exc.explanation or exc}."
            ) from exc
        except RESPONSES_ERRORS as exc:
            raise SandboxUnavailable(_engine_down_sentence(exc)) from exc
        process = DockerProcess(client, container, spec, cgroup)
        try:
            process.begin()
        except BaseException:
            process.discard()
            raise
        if process.cgroup_hidden:
            # Another view of the cgroup tree (a worker in a privileged container): stop trying.
            self._host_cgroups = False
        return process

    def describe_isolation(self) -> str:
        """One line saying how runs are confined on this engine."""
        client = self._docker()
        try:
            info = client.info()
        except RESPONSES_ERRORS as exc:
            raise SandboxUnavailable(_engine_down_sentence(exc)) from exc
        security = ", ".join(
            option.removeprefix("name=") for option in info.get("SecurityOptions") or []
        )
        gpus = "nvidia" in (info.get("Runtimes") or {}) or "nvidia" in str(info.get("CDISpecDirs"))
        peak = "run's parent cgroup" if self._sees_host_cgroups(client) else "engine stats samples"
        return (
            f"engine {info.get('ServerVersion')} ({info.get('DefaultRuntime')}, "
            f"{security or 'no seccomp/apparmor'}), image {self.image}; network none, read-only "
            "image, tmpfs /tmp, all capabilities dropped, no-new-privileges, uid 65534; memory "
            f"(no swap), pids and CPU: cgroup v{info.get('CgroupVersion', '?')} via the engine; "
            "cores: cpuset_cpus; "
            f"peak memory: {peak}; GPUs: {'device_requests' if gpus else 'no nvidia runtime'}"
        )

    def remove_leftovers(self, labels: Mapping[str, str]) -> int:
        client = self._docker()
        filters = [f"{key}={value}" for key, value in sandbox_labels(labels).items()]
        try:
            containers = client.containers.list(all=True, filters={"label": filters})
        except RESPONSES_ERRORS as exc:
            raise SandboxUnavailable(_engine_down_sentence(exc)) from exc
        for container in containers:
            parent = (container.labels or {}).get(CGROUP_LABEL)
            _remove_container(container)
            if parent:
                _RunCgroup(parent).remove()
        return len(containers)

    def identity(self) -> str:
        """The image's content digest, so a result names exactly what it ran in."""
        try:
            image_id = str(self._docker().images.get(self.image).id)
        except docker.errors.DockerException as exc:
            return f"docker {self.image} (unknown digest: {exc.__class__.__name__})"
        return f"docker {self.image}@{image_id}"

    def _docker(self) -> docker.DockerClient:
        with self._client_lock:
            if self._client is None:
                self._client = _connect(timeout_s=60)
            return self._client

    def _sees_host_cgroups(self, client: docker.DockerClient) -> bool:
        """Whether runs can get a parent cgroup we can read after they end (see module doc)."""
        if self._host_cgroups is None:
            try:
                info = client.info()
            except RESPONSES_ERRORS as exc:
                raise SandboxUnavailable(_engine_down_sentence(exc)) from exc
            memory_root = CGROUP_ROOT / "memory"
            self._host_cgroups = (
                info.get("CgroupDriver") == "cgroupfs"
                and str(info.get("CgroupVersion", "1")) == "1"
                and (memory_root / "memory.max_usage_in_bytes").exists()
                and os.access(memory_root, os.W_OK)
            )
        return self._host_cgroups


class DockerProcess(SandboxProcess):
    """One started container; ``wait`` enforces the limits and always removes it."""

    def __init__(
        self,
        client: docker.DockerClient,
        container: Container,
        spec: SandboxSpec,
        cgroup: _RunCgroup | None,
    ) -> None:
        self._client = client
        self._container = container
        self._spec = spec
        self._cgroup = cgroup
        self._stats: _StatsSampler | None = None
        self._output: _AttachedOutput | None = None
        self._started = time.monotonic()
        self._kill_requested = threading.Event()
        self._result: SandboxResult | None = None
        self._removed = False
        self._lock = threading.Lock()
        self.cgroup_hidden = False  # the engine's cgroup tree turned out not to be ours to read

    def begin(self) -> None:
        try:
            self._output = _AttachedOutput(self._container, cap=self._spec.output_cap_bytes)
        except RESPONSES_ERRORS as exc:
            raise SandboxUnavailable(_engine_down_sentence(exc)) from exc
        self._started = time.monotonic()
        try:
            self._container.start()
        except docker.errors.APIError as exc:
            if self._exec_failed(exc):
                return
            why = exc.explanation or exc
            if self._spec.gpus and "device driver" in str(why):
                raise SandboxUnavailable(
                    f"The Docker engine cannot give the sandbox GPUs {', '.join(self._spec.gpus)} "
                    f"({why}): install the NVIDIA Container Toolkit on the host."
                ) from exc
            raise SandboxUnavailable(
                f"The Docker engine could not start the sandbox: {why}."
            ) from exc
        except RESPONSES_ERRORS as exc:
            raise SandboxUnavailable(_engine_down_sentence(exc)) from exc
        self._output.start()
        if self._cgroup is not None and not self._cgroup.visible():
            self.cgroup_hidden = True
            self._cgroup = None
        if self._cgroup is None:
            self._stats = _StatsSampler(self._container)
            self._stats.start()

    def wait(self) -> SandboxResult:
        with self._lock:
            if self._result is not None:
                return self._result
            try:
                self._result = self._wait_and_measure()
                return self._result
            finally:
                self.discard()

    def kill(self) -> None:
        self._kill_requested.set()
        self._kill()

    def poll(self) -> bool:
        if self._result is not None or self._removed:
            return False
        try:
            self._container.reload()
        except docker.errors.NotFound:
            return False
        except RESPONSES_ERRORS as exc:
            raise SandboxUnavailable(_engine_down_sentence(exc)) from exc
        return bool(self._container.status in ("created", "running"))

    def discard(self) -> None:
        """Remove the container and everything attached to it (idempotent)."""
        if self._removed:
            return
        self._removed = True
        try:
            _remove_container(self._container)
        finally:
            if self._output is not None:
                self._output.close()
            if self._stats is not None:
                self._stats.stop()
            if self._cgroup is not None:
                self._cgroup.remove()

    def _wait_and_measure(self) -> SandboxResult:
        timed_out = False
        if not self._wait_until(self._started + self._spec.wall_timeout_s):
            timed_out = True
            self._kill()
            if not self._wait_until(time.monotonic() + KILL_WAIT_S):
                raise SandboxUnavailable("The Docker engine did not stop a timed-out sandbox.")
        wall_s = time.monotonic() - self._started
        try:
            state = self._client.api.inspect_container(self._container.id)["State"]
        except docker.errors.NotFound:
            state = {"Removed": True}  # someone else removed it (a leftover sweep): killed
        except RESPONSES_ERRORS as exc:
            raise SandboxUnavailable(_engine_down_sentence(exc)) from exc
        exit_code = int(state.get("ExitCode", -1))
        if exit_code == SIGKILL_EXIT and not (timed_out or self._kill_requested.is_set()):
            state = self._oom_settled(state)
        if self._kill_requested.is_set() or state.get("Removed"):
            kind, code = ExitKind.KILLED, None
        elif timed_out:
            kind, code = ExitKind.TIMEOUT, None
        elif state.get("OOMKilled") and exit_code != 0:
            kind, code = ExitKind.MEMORY_LIMIT, None
        else:
            kind, code = ExitKind.EXITED, exit_code
        assert self._output is not None  # begin() made it before the container started
        stdout, stderr = self._output.finish(OUTPUT_DRAIN_S)
        return SandboxResult.captured(
            kind,
            code,
            wall_s=wall_s,
            peak_memory_bytes=self._peak_memory(),
            stdout=stdout,
            stderr=stderr,
        )

    def _oom_settled(self, state: dict[str, Any]) -> dict[str, Any]:
        """A SIGKILL we did not send is most likely the OOM killer, whose event the engine may
        record a moment after the exit: look again briefly before calling it a plain exit."""
        deadline = time.monotonic() + OOM_EVENT_GRACE_S
        while not state.get("OOMKilled") and time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                state = self._client.api.inspect_container(self._container.id)["State"]
            except RESPONSES_ERRORS:
                break
        return state

    def _wait_until(self, deadline: float) -> bool:
        """True once the container has exited, False when ``deadline`` passed first."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                self._container.wait(timeout=remaining)
                return True
            except docker.errors.NotFound:
                return True  # already removed by a concurrent kill and discard
            except RESPONSES_ERRORS as exc:
                if _is_read_timeout(exc):
                    continue  # the deadline passed while waiting; the loop decides
                raise SandboxUnavailable(_engine_down_sentence(exc)) from exc

    def _kill(self) -> None:
        try:
            self._container.kill()
        except (docker.errors.NotFound, docker.errors.APIError):
            pass  # not running any more (409) or already removed: nothing to kill
        except requests.exceptions.RequestException as exc:
            raise SandboxUnavailable(_engine_down_sentence(exc)) from exc

    def _peak_memory(self) -> int | None:
        if self._cgroup is not None:
            return self._cgroup.peak_memory()
        if self._stats is not None:
            self._stats.stop()
            return self._stats.peak
        return None

    def _exec_failed(self, exc: docker.errors.APIError) -> bool:
        """A missing or non-executable argv[0] is the program's failure, as with exec: 126/127."""
        try:
            state = self._client.api.inspect_container(self._container.id)["State"]
        except RESPONSES_ERRORS:
            return False
        code = int(state.get("ExitCode", 0))
        if code not in (126, 127):
            return False
        self._result = SandboxResult(
            exit_kind=ExitKind.EXITED,
            exit_code=code,
            wall_s=time.monotonic() - self._started,
            peak_memory_bytes=None,
            stdout="",
            stderr=str(exc.explanation or exc)[: self._spec.output_cap_bytes],
        )
        self.discard()
        return True


class _AttachedOutput:
    """Both output streams of a container, attached before it starts, each capped.

    Attached rather than logged: the engine keeps nothing on disk (a flood cannot fill it), the
    program waits while we read, and the stream ends only after the last byte has been copied.
    """

    def __init__(self, container: Container, *, cap: int) -> None:
        self._stream = container.attach(
            stdout=True, stderr=True, stream=True, logs=False, demux=True
        )
        self._stdout = CappedBuffer(cap)
        self._stderr = CappedBuffer(cap)
        self._thread = threading.Thread(target=self._drain, name="edc-docker-output", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self, timeout_s: float) -> tuple[CapturedOutput, CapturedOutput]:
        """What arrived; the stream ends with the container, and is cut after ``timeout_s``."""
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self.close()
        return self._stdout.result(), self._stderr.result()

    def close(self) -> None:
        with contextlib.suppress(OSError, docker.errors.DockerException):
            self._stream.close()
        # The stream's close shuts the socket down, but the HTTP response still holds it open.
        response = getattr(self._stream, "_response", None)
        if response is not None:
            with contextlib.suppress(OSError):
                response.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(1.0)

    def _drain(self) -> None:
        try:
            for out, err in self._stream:
                if out:
                    self._stdout.feed(out)
                if err:
                    self._stderr.feed(err)
        except (*RESPONSES_ERRORS, OSError, ValueError):
            pass  # the stream was cut under us: what arrived is all there is


class _StatsSampler(threading.Thread):
    """The engine's memory figures, sampled while the container runs (where cgroups are hidden)."""

    def __init__(self, container: Container) -> None:
        super().__init__(name="edc-docker-stats", daemon=True)
        self._container = container
        self._stopped = threading.Event()
        self.peak: int | None = None

    def run(self) -> None:
        while not self._stopped.is_set():
            try:
                stats = self._container.stats(stream=False, one_shot=True)
            except RESPONSES_ERRORS:
                return
            memory = stats.get("memory_stats") or {}
            value = memory.get("max_usage") or memory.get("usage")
            if isinstance(value, int) and value > 0:
                self.peak = max(self.peak or 0, value)
            self._stopped.wait(STATS_INTERVAL_S)

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(2.0)


class _RunCgroup:
    """A run's parent cgroup (cgroup v1, ``cgroupfs`` driver): the engine makes the container's
    cgroup inside it, and its ``memory.max_usage_in_bytes`` outlives the container."""

    def __init__(self, parent: str) -> None:
        self.parent = parent

    def visible(self) -> bool:
        # The engine made the parent when it started the container; it stays until remove().
        return self._path("memory").is_dir()

    def peak_memory(self) -> int | None:
        try:
            return int((self._path("memory") / "memory.max_usage_in_bytes").read_text())
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        """rmdir the parent in every hierarchy the engine made it in (empty once the run ended)."""
        for controller in _cgroup_hierarchies():
            path = controller / self.parent.lstrip("/")
            for _ in range(10):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        break
                    # The engine may still be tearing the container's own group down.
                    time.sleep(0.02)

    def _path(self, controller: str) -> Path:
        return CGROUP_ROOT / controller / self.parent.lstrip("/")


def _cgroup_hierarchies() -> Iterator[Path]:
    try:
        yield from (p for p in CGROUP_ROOT.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return


def _remove_container(container: Container) -> None:
    """Force-remove ``container``; gone already is fine, a removal in progress is waited for."""
    for _ in range(20):
        try:
            container.remove(force=True)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise SandboxUnavailable(
                    f"The Docker engine could not remove sandbox {container.short_id}: "
                    f"{exc.explanation or exc}."
                ) from exc
            time.sleep(0.1)
        except requests.exceptions.RequestException as exc:
            raise SandboxUnavailable(_engine_down_sentence(exc)) from exc


def _grant_sandbox_access(root: Path, *, writable: bool) -> None:
    """The sandbox runs as nobody: let 'others' read (and for writable mounts write) ``root``.

    Execute bits follow the owner's, unix sockets become connectable. Symlinks are left alone so
    nothing outside ``root`` is touched.
    """
    for path in _walk_no_symlinks(root):
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        mode = info.st_mode
        if stat.S_ISDIR(mode):
            wanted = stat.S_IROTH | stat.S_IXOTH | (stat.S_IWOTH if writable else 0)
        elif stat.S_ISREG(mode):
            wanted = stat.S_IROTH | (stat.S_IWOTH if writable else 0)
            if mode & stat.S_IXUSR:
                wanted |= stat.S_IXOTH
        elif stat.S_ISSOCK(mode):
            wanted = stat.S_IROTH | stat.S_IWOTH
        else:
            continue
        if mode & wanted != wanted:
            try:
                os.chmod(path, stat.S_IMODE(mode) | wanted)
            except OSError as exc:
                raise SandboxUnavailable(
                    f"Cannot make {path} readable inside the sandbox (uid 65534): {exc}."
                ) from exc


def _walk_no_symlinks(root: Path) -> Iterator[Path]:
    if root.is_symlink() or not root.exists():
        return
    yield root
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            yield Path(dirpath) / name


def _connect(*, timeout_s: float) -> docker.DockerClient:
    """A client for the engine ``DOCKER_HOST`` (default: the local socket) names."""
    base_url = docker.utils.kwargs_from_env().get("base_url") or DEFAULT_UNIX_SOCKET
    if base_url.startswith(("unix://", "http+unix://")):
        # Probe the socket first: the SDK leaks its socket when the engine is not there.
        path = base_url.split("://", 1)[1]
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(timeout_s)
                probe.connect(path)
        except OSError as exc:
            raise SandboxUnavailable(_engine_down_sentence(exc)) from exc
    try:
        return docker.from_env(timeout=int(timeout_s))
    except RESPONSES_ERRORS as exc:
        raise SandboxUnavailable(_engine_down_sentence(exc)) from exc


def _is_read_timeout(exc: BaseException) -> bool:
    # requests raises a read timeout of a response body as ConnectionError(ReadTimeoutError).
    if isinstance(exc, requests.exceptions.Timeout):
        return True
    return isinstance(exc, requests.exceptions.ConnectionError) and any(
        isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in exc.args
    )


def _image(settings: Settings, runtime: DecoderRuntime | None) -> str:
    return runtime.image if runtime and runtime.image else settings.sandbox_image


def _engine_down_sentence(exc: BaseException) -> str:
    return (
        f"The Docker engine does not answer ({exc}): start it (`dockerd > /var/log/dockerd.log "
        "2>&1 &` or `systemctl start docker`), or mount its socket at /var/run/docker.sock."
    )

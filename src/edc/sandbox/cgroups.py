"""Per-run cgroups: memory, pids and CPU limits and core pinning on cgroup v1, tree kill on v2.

Each run gets its own group in every hierarchy the worker can write, nested under the worker's
own group (so the worker's limits still cover its sandboxes) in a folder named ``edc``::

    /sys/fs/cgroup/memory/<worker's group>/edc/<run name>
    /sys/fs/cgroup/pids/<worker's group>/edc/<run name>
    /sys/fs/cgroup/cpu/<worker's group>/edc/<run name>
    /sys/fs/cgroup/cpuset/<worker's group>/edc/<run name>    (only for a run pinned to cores)
    /sys/fs/cgroup/unified/<worker's group>/edc/<run name>   (v2: no controllers, ``cgroup.kill``)

The run name carries the run's labels, so a restarted worker can find and remove what a killed one
left behind. A controller that cannot be created or configured is simply absent from the run's
group; the caller falls back to rlimits for it. Limits on a v2 hierarchy with controllers are not
implemented: such machines get the rlimit fallbacks and v2's ``cgroup.kill``.

A v1 cpuset group takes no process until its ``cpuset.cpus`` and ``cpuset.mems`` are set, and
its cores must be among its parent's: the ``edc`` folder copies both from the worker's group, the
run's group copies the memory nodes and takes the run's cores.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

LIMIT_CONTROLLERS = ("memory", "pids", "cpu")
CPUSET = "cpuset"  # pins a run to its cores (not a limit: the CFS quota is the CPU limit)
UNIFIED = "unified"  # the cgroup v2 hierarchy, used for its atomic cgroup.kill
GROUP_FOLDER = "edc"
CPU_PERIOD_US = 100_000
_NAME_MAX = 255


@dataclass(frozen=True)
class CgroupLimits:
    memory_bytes: int
    pids_max: int
    cpus: float
    cpuset: tuple[int, ...] = ()  # the cores to pin the run to; empty: no cpuset group


def run_name(run_id: str, labels: Mapping[str, str]) -> str:
    """``<run id>,key=value,...`` with keys and values percent-quoted (so ``,`` and ``=`` split)."""
    parts = [run_id, *(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in labels.items())]
    name = ",".join(parts)
    if len(name) > _NAME_MAX:
        raise ValueError(f"sandbox labels are too long to name a cgroup: {dict(labels)!r}")
    return name


def labels_of(name: str) -> dict[str, str]:
    labels = {}
    for part in name.split(",")[1:]:
        key, sep, value = part.partition("=")
        if sep:
            labels[unquote(key)] = unquote(value)
    return labels


def hierarchy_dirs() -> dict[str, Path]:
    """Where this process's own group sits in each hierarchy we use, by controller (or UNIFIED)."""
    own: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [UNIFIED]:
                own[name] = path
    dirs: dict[str, Path] = {}
    for mount_root, mount_point, fstype, options in _cgroup_mounts():
        names = [UNIFIED] if fstype == "cgroup2" else options
        for name in names:
            wanted = (*LIMIT_CONTROLLERS, CPUSET, UNIFIED)
            if name not in wanted or name not in own or name in dirs:
                continue
            relative = own[name]
            # In a cgroup namespace the mount's root may be a prefix of our path.
            if mount_root != "/" and relative.startswith(mount_root):
                relative = relative[len(mount_root) :]
            dirs[name] = Path(mount_point) / relative.lstrip("/")
    return dirs


def _cgroup_mounts() -> Iterator[tuple[str, str, str, list[str]]]:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    for line in lines:
        fields, _, tail = line.partition(" - ")
        parts, tail_parts = fields.split(), tail.split()
        if len(parts) < 5 or len(tail_parts) < 3 or tail_parts[0] not in ("cgroup", "cgroup2"):
            continue
        mount_point = parts[4].replace("\\040", " ")
        yield parts[3], mount_point, tail_parts[0], tail_parts[2].split(",")


@dataclass
class RunCgroup:
    """The groups of one run, by controller; only those that exist and were configured."""

    name: str
    dirs: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def create(cls, name: str, limits: CgroupLimits) -> RunCgroup:
        group = cls(name)
        for controller, base in hierarchy_dirs().items():
            if controller == CPUSET and not limits.cpuset:
                continue
            path = base / GROUP_FOLDER / name
            try:
                _make_group(path, cpuset=controller == CPUSET)
            except OSError:
                continue
            try:
                _configure(controller, path, limits)
            except OSError:
                _remove_group(path)
                continue
            group.dirs[controller] = path
        return group

    @classmethod
    def existing(cls) -> list[RunCgroup]:
        """Every run group under this worker's groups, e.g. to remove leftovers."""
        groups: dict[str, RunCgroup] = {}
        for controller, base in hierarchy_dirs().items():
            with contextlib.suppress(OSError):
                for entry in os.scandir(base / GROUP_FOLDER):
                    if entry.is_dir(follow_symlinks=False):
                        group = groups.setdefault(entry.name, cls(entry.name))
                        group.dirs[controller] = Path(entry.path)
        return list(groups.values())

    @property
    def limited(self) -> frozenset[str]:
        """The limits this group enforces (a subset of LIMIT_CONTROLLERS)."""
        return frozenset(c for c in self.dirs if c in LIMIT_CONTROLLERS)

    @property
    def pinned(self) -> bool:
        """Whether a cpuset group pins the run to its cores."""
        return CPUSET in self.dirs

    @property
    def can_kill(self) -> bool:
        return bool(self.dirs)

    def join(self, pid: int) -> None:
        """Move ``pid`` into every group; a group that refuses it is dropped (and removed)."""
        for controller, path in list(self.dirs.items()):
            try:
                (path / "cgroup.procs").write_text(f"{pid}\n")
            except OSError:
                del self.dirs[controller]
                _remove_group(path)

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.dirs.values():
            with contextlib.suppress(OSError, ValueError):
                found.update(int(p) for p in (path / "cgroup.procs").read_text().split())
        return found

    def kill(self) -> None:
        """SIGKILL every process in the groups; repeats until none is left (fork races)."""
        unified = self.dirs.get(UNIFIED)
        if unified is not None:
            with contextlib.suppress(OSError):
                (unified / "cgroup.kill").write_text("1\n")
        for attempt in range(200):
            # Dead processes waiting to be reaped (by a slow init) are past killing.
            pids = {pid for pid in self.pids() if not _is_zombie(pid)}
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(min(0.005, 0.0002 * 2**attempt))  # usually gone within a millisecond

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer took in this group."""
        path = self.dirs.get("memory")
        if path is None:
            return 0
        try:
            text = (path / "memory.oom_control").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        # Kernels before 4.13 have no counter: hitting the limit is the best sign there is.
        return _read_int(path / "memory.failcnt") or 0

    def peak_memory_bytes(self) -> int | None:
        path = self.dirs.get("memory")
        return None if path is None else _read_int(path / "memory.max_usage_in_bytes")

    def remove(self) -> None:
        """Remove the groups (they must be empty: call ``kill`` first)."""
        for path in self.dirs.values():
            _remove_group(path)
            # Also drop the shared ``edc`` folder when this was the last run in it.
            with contextlib.suppress(OSError):
                path.parent.rmdir()
        self.dirs.clear()


def _make_group(path: Path, *, cpuset: bool = False) -> None:
    # A concurrent run may remove the shared ``edc`` folder between our two mkdirs: retry.
    for attempt in range(3):
        try:
            path.parent.mkdir(exist_ok=True)
            if cpuset:
                _inherit_cpuset(path.parent)
            path.mkdir()
            return
        except FileNotFoundError:
            if attempt == 2:
                raise


def _configure(controller: str, path: Path, limits: CgroupLimits) -> None:
    if controller == "memory":
        (path / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
        # With swap accounting, also cap memory+swap so the limit cannot be dodged by swapping.
        memsw = path / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            memsw.write_text(str(limits.memory_bytes))
    elif controller == "pids":
        (path / "pids.max").write_text(str(limits.pids_max))
    elif controller == "cpu":
        quota = max(1000, int(limits.cpus * CPU_PERIOD_US))
        (path / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
        (path / "cpu.cfs_quota_us").write_text(str(quota))
    elif controller == CPUSET:
        (path / "cpuset.cpus").write_text(",".join(str(c) for c in limits.cpuset))
        (path / "cpuset.mems").write_text((path.parent / "cpuset.mems").read_text())


def _inherit_cpuset(folder: Path) -> None:
    """Give the shared ``edc`` folder its parent's cores and memory nodes, where it has none."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not (folder / name).read_text().strip():
            (folder / name).write_text((folder.parent / name).read_text())


def _remove_group(path: Path) -> None:
    # A group whose last task just died can be briefly busy.
    for _ in range(100):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return
            time.sleep(0.01)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # already gone
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None

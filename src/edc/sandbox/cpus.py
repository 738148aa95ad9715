"""Which cores a worker owns, how `edc up` shares a machine's out, and where the harness runs.

A worker owns the cores ``EDC_CPUS`` names (unset: every core it may run on). Its sandboxes are
pinned there: bubblewrap through a cgroup v1 cpuset, else ``sched_setaffinity`` on the gated
process before it is released; Docker through ``cpuset_cpus``. Inside, the math libraries get
one thread per owned core, at most the task's CPU share rounded up (``thread_count``): the run's
CFS quota is the task's share, and a thread pool larger than it would only be throttled, stalling
at every barrier. `edc up` gives each worker exactly that many cores, so there the thread count
equals the cores owned.

`edc up --workers N` gives each worker ``ceil(task cpus)`` cores of its own, lowest first, and
refuses to start anything when they do not fit (``split_cpus``). The cores left over belong to no
worker: the harnesses and the portal run there.

While a run is timed, the harness (the worker's process: the thread that stamps every chunk, and
its heartbeat and capture threads) runs on the cores the worker may run on but does not own
(``harness_cpus``, held by ``harness_pinned``): under `edc up` the cores no worker owns; for a
worker started by hand, those its affinity allows beyond EDC_CPUS (``EDC_CPUS=0-1 taskset -c 0-2
edc worker``: the harness on core 2). With none left (a machine split whole) it shares the
sandbox's cores, and the worker's start log says so. Outside timed runs (preparing, verifying) the
worker uses its own cores too: they are idle then.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from edc.config import Settings, format_id_list
from edc.errors import SandboxUnavailable


def available_cpus() -> tuple[int, ...]:
    """The cores this thread may run on (the machine's, less what taskset or a cpuset took)."""
    return tuple(sorted(os.sched_getaffinity(0)))


def cores_needed(cpus: float) -> int:
    """Whole cores a CPU share needs: 1.0 → 1, 1.5 → 2."""
    return max(1, math.ceil(cpus - 1e-9))


def thread_count(cpus: float, cpuset: Sequence[int]) -> int:
    """BLAS/OpenMP threads inside a sandbox pinned to ``cpuset`` with a quota of ``cpus``."""
    need = cores_needed(cpus)
    return min(len(cpuset), need) if cpuset else need


def owned_cpus(settings: Settings) -> tuple[int, ...]:
    """The cores a worker's sandboxes are pinned to: EDC_CPUS, else every core it may use."""
    return settings.cpu_ids or available_cpus()


def harness_cpus(settings: Settings) -> tuple[int, ...]:
    """Where the harness runs while it times a run: the cores it may use beyond the owned ones."""
    owned = set(owned_cpus(settings))
    return tuple(c for c in available_cpus() if c not in owned)


@contextmanager
def harness_pinned(cores: Sequence[int]) -> Iterator[None]:
    """This process (every thread) on ``cores`` for the block, then back; nothing when empty."""
    if not cores:
        yield
        return
    before = os.sched_getaffinity(0)
    pin_process(os.getpid(), cores)
    try:
        yield
    finally:
        pin_process(os.getpid(), before)


@dataclass(frozen=True)
class WorkerCpus:
    owned: tuple[int, ...]  # the sandboxes' cores
    harness: tuple[int, ...]  # where the harness runs while it times; empty: it shares ``owned``

    def describe(self) -> str:
        owned = f"sandboxes pinned to cores {format_id_list(self.owned)}"
        if self.harness:
            return f"{owned}; harness on cores {format_id_list(self.harness)} while it times"
        return f"{owned}; harness shares them (no spare core)"


def worker_cpus(settings: Settings) -> WorkerCpus:
    """Where this worker's sandboxes and harness run; refuses cores the worker may not use."""
    available = available_cpus()
    owned = settings.cpu_ids or available
    missing = sorted(set(owned) - set(available))
    if missing:
        raise SandboxUnavailable(
            f"EDC_CPUS={settings.cpus} names cores {format_id_list(missing)} that this worker "
            f"may not run on; it may use {format_id_list(available)}."
        )
    return WorkerCpus(owned=owned, harness=harness_cpus(settings))


def check_enough(owned: Sequence[int], cpus: float) -> None:
    """A worker must own at least the task's CPU share, rounded up to whole cores."""
    need = cores_needed(cpus)
    if len(owned) < need:
        raise SandboxUnavailable(
            f"This worker owns {_cores(len(owned))} ({format_id_list(owned)}) but the task needs "
            f"{need} (its limits.cpus = {cpus:g}): give it more with EDC_CPUS, or run it on a "
            "larger machine."
        )


@dataclass(frozen=True)
class Split:
    workers: tuple[tuple[int, ...], ...]  # each worker's own cores
    spare: tuple[int, ...]  # owned by none: for the harnesses and the portal


def split_cpus(
    cores: Sequence[int], workers: int, cpus: float, *, source: str = "this machine has"
) -> Split:
    """Each of ``workers`` gets ``ceil(cpus)`` of ``cores``, lowest first; refuses with the
    arithmetic when they do not fit. ``source`` says where ``cores`` came from."""
    need = cores_needed(cpus)
    ordered = sorted(cores)
    if workers * need > len(ordered):
        raise SandboxUnavailable(
            f"{workers} worker{'s' if workers != 1 else ''} × {_cores(need)} each = "
            f"{_cores(workers * need)} needed; {source} {len(ordered)} "
            f"({format_id_list(ordered)}). Each worker owns at least the task's limits.cpus "
            f"({cpus:g}) rounded up: run fewer workers, or lower the task's cpus."
        )
    shares = tuple(tuple(ordered[i * need : (i + 1) * need]) for i in range(workers))
    return Split(workers=shares, spare=tuple(ordered[workers * need :]))


def pin_process(pid: int, cores: Iterable[int]) -> None:
    """Pin every thread of ``pid`` (threads started later inherit it) to ``cores``."""
    mask = set(cores)
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(tid), mask)


def _cores(count: int) -> str:
    return f"{count} core{'s' if count != 1 else ''}"

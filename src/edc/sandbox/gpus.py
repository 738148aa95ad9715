"""Which NVIDIA device nodes and driver files a sandbox given some GPUs sees: those GPUs only.

::

    binds = gpu_binds(("1",))   # /dev/nvidia1 (by its minor number), the control devices, and the
                                # driver's libraries where /usr does not already hold them

A GPU is named by its index in the driver's order (``nvidia-smi``'s: PCI bus order), as
``EDC_GPUS`` names them. Its device node is ``/dev/nvidia<minor>``, the minor number read from
``/proc/driver/nvidia/gpus/<bus id>/information`` (the index where the driver does not say). The
control devices every CUDA program opens (``nvidiactl``, ``nvidia-uvm``, ...) come along; the other
GPUs' nodes never do, so a decoder that unsets ``CUDA_VISIBLE_DEVICES`` still sees only its own.
The driver's user-space libraries are found as the NVIDIA container toolkit finds them (the linker
cache, ``ldconfig -p``); those outside the folders every sandbox binds are bound read-only.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edc.errors import SandboxUnavailable

# Opened by every CUDA program; bound when present (nvidia-modeset and the caps only on some).
CONTROL_DEVICES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
CAPS_DIR = "nvidia-caps"
# The driver's user-space libraries a CUDA program loads (the toolkit's "utility" and "compute").
DRIVER_LIBRARIES = (
    "libcuda.so",
    "libcudadebugger.so",
    "libnvidia-ml.so",
    "libnvidia-ptxjitcompiler.so",
    "libnvidia-nvvm.so",
    "libnvidia-gpucomp.so",
    "libnvidia-cfg.so",
)
_MINOR = re.compile(r"^Device Minor:\s*(\d+)", re.MULTILINE)
_UUID = re.compile(r"^GPU UUID:\s*(\S+)", re.MULTILINE)
LDCONFIG = ("ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig")


@dataclass(frozen=True)
class GpuBinds:
    devices: tuple[Path, ...]  # device nodes, bound at their own path
    libraries: tuple[Path, ...]  # driver library files outside the sandbox's system folders
    # What CUDA_VISIBLE_DEVICES names inside: the GPUs' UUIDs where the driver tells them (CUDA
    # numbers the devices it can open from 0, so a host index would name the wrong one or none).
    visible: tuple[str, ...] = ()


def _driver_facts(pattern: re.Pattern[str], proc: Path) -> list[str]:
    """One fact per GPU, in index order (PCI bus order); empty where the driver does not say."""
    facts: list[str] = []
    for info in sorted((proc / "driver" / "nvidia" / "gpus").glob("*/information")):
        found = pattern.search(info.read_text(errors="replace"))
        if found is None:
            return []
        facts.append(found.group(1))
    return facts


def device_minors(proc: Path = Path("/proc")) -> list[int]:
    """Each GPU's device minor number, in index order; empty where the driver does not say."""
    return [int(minor) for minor in _driver_facts(_MINOR, proc)]


def visible_devices(gpus: Sequence[str], proc: Path = Path("/proc")) -> tuple[str, ...]:
    """CUDA_VISIBLE_DEVICES for a run given ``gpus``: their UUIDs, else the indices as given."""
    uuids = _driver_facts(_UUID, proc)
    if uuids and all(g.isdigit() and int(g) < len(uuids) for g in gpus):
        return tuple(uuids[int(g)] for g in gpus)
    return tuple(gpus)


def device_nodes(
    gpus: Sequence[str], dev: Path = Path("/dev"), proc: Path = Path("/proc")
) -> list[Path]:
    """The nodes a sandbox given ``gpus`` (indices) gets; raises SandboxUnavailable, naming the
    GPU, when one is not on this machine."""
    if not gpus:
        return []
    minors = device_minors(proc)
    nodes: list[Path] = []
    for gpu in gpus:
        if not gpu.isdigit():
            raise SandboxUnavailable(f"GPU {gpu!r} is not an index (EDC_GPUS takes 0, 1, ...).")
        index = int(gpu)
        if minors and index >= len(minors):
            raise SandboxUnavailable(
                f"EDC_GPUS names GPU {index}, but the driver knows {len(minors)} "
                f"GPU{'s' if len(minors) != 1 else ''} here (0-{len(minors) - 1})."
            )
        node = dev / f"nvidia{minors[index] if minors else index}"
        if not node.exists():
            raise SandboxUnavailable(
                f"EDC_GPUS names GPU {index}, but its device {node} does not exist on this "
                "machine: is the NVIDIA driver loaded?"
            )
        nodes.append(node)
    if not (dev / "nvidiactl").exists():
        raise SandboxUnavailable(
            f"{dev / 'nvidiactl'} does not exist: the NVIDIA driver is not loaded here."
        )
    controls = [dev / name for name in CONTROL_DEVICES if (dev / name).exists()]
    caps = sorted((dev / CAPS_DIR).glob("*")) if (dev / CAPS_DIR).is_dir() else []
    return [*nodes, *controls, *caps]


def driver_libraries(ldconfig_listing: str | None = None) -> list[Path]:
    """The driver's user-space library files the linker cache knows (``ldconfig -p``)."""
    if ldconfig_listing is None:
        ldconfig_listing = ""
        for exe in LDCONFIG:  # /sbin is often not on a service's PATH
            try:
                ldconfig_listing = subprocess.run(
                    [exe, "-p"], capture_output=True, text=True, timeout=10, check=False
                ).stdout
                break
            except (OSError, subprocess.SubprocessError):
                continue
    found: list[Path] = []
    for line in ldconfig_listing.splitlines():
        name, _, target = line.strip().partition(" => ")
        if target and name.split(" ")[0].startswith(DRIVER_LIBRARIES):
            path = Path(target.strip())
            if path not in found:
                found.append(path)
    return found


def gpu_binds(gpus: Sequence[str], bound: Sequence[Path]) -> GpuBinds:
    """What a sandbox given ``gpus`` needs besides the ``bound`` folders it already has."""
    if not gpus:
        return GpuBinds((), ())
    outside = [
        lib
        for lib in driver_libraries()
        if not any(lib.resolve().is_relative_to(folder.resolve()) for folder in bound)
    ]
    return GpuBinds(tuple(device_nodes(gpus)), tuple(outside), visible_devices(gpus))

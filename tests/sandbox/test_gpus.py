"""Which device nodes and driver files a sandbox given GPUs gets, on a fake driver tree: only its
own GPUs' nodes (by minor number), the control devices, and driver libraries outside /usr."""

from __future__ import annotations

from pathlib import Path

import pytest

from edc.errors import SandboxUnavailable
from edc.sandbox.gpus import device_minors, device_nodes, driver_libraries, visible_devices


def _host(root: Path, minors: list[int], controls: tuple[str, ...] = ("nvidiactl", "nvidia-uvm")):
    """A /dev and /proc of a host whose GPUs (in bus order) have ``minors``."""
    dev, proc = root / "dev", root / "proc"
    dev.mkdir(parents=True)
    for index, minor in enumerate(minors):
        info = proc / "driver" / "nvidia" / "gpus" / f"0000:{index + 0x10:02x}:00.0" / "information"
        info.parent.mkdir(parents=True)
        info.write_text(
            f"Model: \t\t NVIDIA H200\nIRQ: 42\nGPU UUID: \t GPU-{index}-uuid\n"
            f"Device Minor: \t {minor}\n"
        )
        (dev / f"nvidia{minor}").touch()
    for name in controls:
        (dev / name).touch()
    (dev / "nvidia-caps").mkdir()
    (dev / "nvidia-caps" / "nvidia-cap1").touch()
    return dev, proc


def test_a_gpu_index_maps_to_its_minor_and_brings_the_control_devices(tmp_path: Path) -> None:
    # Bus order differs from minor order: index 1 is /dev/nvidia0.
    dev, proc = _host(tmp_path, [2, 0, 1])
    assert device_minors(proc) == [2, 0, 1]
    nodes = device_nodes(("1",), dev, proc)
    assert nodes == [
        dev / "nvidia0",
        dev / "nvidiactl",
        dev / "nvidia-uvm",
        dev / "nvidia-caps" / "nvidia-cap1",
    ]
    assert dev / "nvidia2" not in nodes and dev / "nvidia1" not in nodes
    assert device_nodes((), dev, proc) == []


def test_without_driver_information_the_index_is_the_minor(tmp_path: Path) -> None:
    dev, _ = _host(tmp_path, [0, 1])
    assert device_nodes(("1",), dev, tmp_path / "no-proc")[0] == dev / "nvidia1"


@pytest.mark.parametrize(
    ("gpus", "message"),
    [
        (("4",), r"names GPU 4, but the driver knows 2 GPUs here \(0-1\)"),
        (("GPU-3f2a",), "is not an index"),
    ],
)
def test_gpus_the_host_lacks_are_refused_by_name(
    tmp_path: Path, gpus: tuple[str, ...], message: str
) -> None:
    dev, proc = _host(tmp_path, [0, 1])
    with pytest.raises(SandboxUnavailable, match=message):
        device_nodes(gpus, dev, proc)


def test_a_missing_node_or_driver_is_refused(tmp_path: Path) -> None:
    dev, proc = _host(tmp_path, [0], controls=())
    with pytest.raises(SandboxUnavailable, match="driver is not loaded"):
        device_nodes(("0",), dev, proc)
    (dev / "nvidia0").unlink()
    with pytest.raises(SandboxUnavailable, match=r"GPU 0, but its device .*nvidia0 does not exist"):
        device_nodes(("0",), dev, proc)


def test_driver_libraries_come_from_the_linker_cache() -> None:
    listing = """3 libs found in cache `/etc/ld.so.cache'
\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1
\tlibnvidia-ml.so.1 (libc6,x86-64) => /usr/local/nvidia/lib64/libnvidia-ml.so.1
\tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1
"""
    assert driver_libraries(listing) == [
        Path("/usr/lib/x86_64-linux-gnu/libcuda.so.1"),
        Path("/usr/local/nvidia/lib64/libnvidia-ml.so.1"),
    ]


def test_cuda_names_the_runs_gpus_by_uuid(tmp_path: Path) -> None:
    _, proc = _host(tmp_path, [2, 0, 1])
    assert visible_devices(("2", "0"), proc) == ("GPU-2-uuid", "GPU-0-uuid")
    # Where the driver tells no UUIDs, the indices as given.
    assert visible_devices(("1",), tmp_path / "no-proc") == ("1",)

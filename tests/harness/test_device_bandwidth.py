"""Where the roofline's bandwidth comes from: the CPU's memory for a CPU task, the worker's first
GPU's device memory for a GPU task run on a worker that owns GPUs."""

from __future__ import annotations

from pathlib import Path

import pytest

from edc.config import Settings
from edc.errors import InvalidTask
from edc.harness import bandwidth
from edc.harness.evaluate import reference_device, run_device
from edc.tasks.task import Task, bundled_task_dir


def _task(tmp_path: Path, hardware_class: str, reference: str = 'reference = "numpy"') -> Task:
    root = tmp_path / hardware_class
    root.mkdir()
    for item in bundled_task_dir().iterdir():
        (root / item.name).symlink_to(item)
    (root / "task.toml").unlink()
    text = (bundled_task_dir() / "task.toml").read_text()
    text = text.replace('class = "cpu"', f'class = "{hardware_class}"')
    (root / "task.toml").write_text(text.replace('reference = "numpy"', reference))
    return Task.load(root)


def test_a_gpu_task_on_a_worker_with_gpus_runs_on_its_first(tmp_path: Path) -> None:
    gpu_task = _task(tmp_path, "h200")
    assert run_device(Settings(gpus="2,3"), gpu_task) == "cuda:2"
    assert run_device(Settings(), gpu_task) == "cpu"  # no GPU handed to the sandbox
    assert run_device(Settings(gpus="0"), _task(tmp_path, "cpu")) == "cpu"


def test_the_reference_runs_on_the_gpu_only_where_the_task_says(tmp_path: Path) -> None:
    on_gpu = _task(tmp_path, "h200", 'reference = "torch"\nreference_device = "gpu"')
    assert reference_device(Settings(gpus="1"), on_gpu) == "cuda:1"
    assert reference_device(Settings(), on_gpu) == "cuda"
    assert reference_device(Settings(gpus="1"), _task(tmp_path, "h100")) == "cpu"


def test_the_cpu_bandwidth_is_the_machines_copy_rate() -> None:
    assert bandwidth.device_bandwidth_gb_per_s("cpu") == bandwidth.machine_bandwidth_gb_per_s()
    assert bandwidth.machine_bandwidth_gb_per_s() > 0.1


def test_a_gpu_bandwidth_needs_a_gpu_to_measure() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        assert bandwidth.measure_device_copy_gb_per_s("cuda:0", array_mb=64) > 100
        return
    with pytest.raises(InvalidTask, match="torch sees no GPU"):
        bandwidth.measure_device_copy_gb_per_s("cuda:0", array_mb=8)
    # The worker measures it in a child process, which says the same.
    with pytest.raises(InvalidTask, match=r"could not be measured.*torch sees no GPU"):
        bandwidth.device_bandwidth_gb_per_s("cuda:0")

"""What produced a result: recorded with every result, so any figure can be traced to the worker,
machine, device, driver, sandbox, task and harness that measured it."""

from __future__ import annotations

import functools
import platform
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from edc import __version__
from edc.config import Settings
from edc.harness.bandwidth import device_bandwidth_gb_per_s
from edc.harness.evaluate import run_device
from edc.harness.measurement import MEASUREMENT_VERSION, result_version
from edc.harness.protocol import PROTOCOL_VERSION
from edc.sandbox.base import Sandbox
from edc.tasks.task import Task, content_hash_of, model_hash_of


@functools.cache
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def _gpus(devices: tuple[str, ...]) -> tuple[str, str] | None:
    """(models, driver) of the given GPUs from nvidia-smi, or None where there is none."""
    smi = shutil.which("nvidia-smi")
    if smi is None or not devices:
        return None
    try:
        out = subprocess.run(
            [
                smi,
                f"--id={','.join(devices)}",
                "--query-gpu=name,driver_version",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [line.split(",") for line in out.strip().splitlines() if "," in line]
    if not rows:
        return None
    return ", ".join(r[0].strip() for r in rows), rows[0][1].strip()


def _task_identity(task: Task) -> dict[str, str]:
    # The hashes are kept until a model file changes (hashing weights is slow).
    return {
        "name": task.name,
        "version": task.version,
        "model_sha256": model_hash_of(task.root),
        "content_sha256": content_hash_of(task.root),
    }


def result_version_for(task: Task) -> str:
    """The version a result measured now on ``task`` is comparable by (see
    :mod:`edc.harness.measurement`)."""
    return result_version(content_hash_of(task.root))


def warm(settings: Settings, task: Task) -> None:
    """Work out the slow facts once in the worker process, before it forks a work-horse per job
    (hashing a real model's weights, measuring the memory bandwidth)."""
    _cpu_model()
    _gpus(settings.gpu_ids)
    _task_identity(task)
    if task.hardware.memory_bandwidth_gbps is None:
        # The roofline's denominator (the GPU's, for a GPU task); measured before any timing.
        device_bandwidth_gb_per_s(run_device(settings, task))


def provenance(
    settings: Settings, *, sandbox: Sandbox, task: Task, worker_id: str
) -> dict[str, Any]:
    devices = settings.gpu_ids
    gpu = _gpus(devices)
    return {
        "worker": worker_id,
        "host": socket.gethostname(),
        "hardware_class": task.spec.hardware.kind,
        "device": gpu[0] if gpu else _cpu_model(),
        "driver": f"nvidia {gpu[1]}" if gpu else f"linux {platform.release()}",
        "gpus": list(devices),
        "sandbox": sandbox.identity(),
        "task": _task_identity(task),
        "harness": {
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "measurement": MEASUREMENT_VERSION,
        },
    }

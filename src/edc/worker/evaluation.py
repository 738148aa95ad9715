"""What the worker measures for one unpacked submission.

Until the decode harness is wired in, a run means: start the submission's entry point in the
sandbox and record what was really measured from outside (wall time, exit code, peak memory).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edc.config import Settings
from edc.errors import RunFailed
from edc.models import FailureReason
from edc.sandbox.base import SUBMISSION_DIR, ExitKind, SandboxResult, SandboxSpec
from edc.sandbox.select import choose_sandbox

PYTHON_ENTRY = "submission.py"
NATIVE_ENTRY = "run"


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, Any]
    logs: str


def entry_argv(submission_dir: Path, python: str) -> tuple[str, ...]:
    if (submission_dir / PYTHON_ENTRY).is_file():
        return (python, PYTHON_ENTRY)
    if (submission_dir / NATIVE_ENTRY).is_file():
        return (f"{SUBMISSION_DIR}/{NATIVE_ENTRY}",)
    raise RunFailed(
        FailureReason.INVALID_ARCHIVE,
        f"The submission has no entry point: add {PYTHON_ENTRY} or an executable {NATIVE_ENTRY}.",
    )


def combined_logs(result: SandboxResult) -> str:
    parts = []
    for name, text, cut in (
        ("stdout", result.stdout, result.stdout_truncated),
        ("stderr", result.stderr, result.stderr_truncated),
    ):
        if text or cut:
            parts.append(f"--- {name}{' (truncated)' if cut else ''} ---\n{text}")
    return "\n".join(parts)


def evaluate(
    settings: Settings, *, submission_dir: Path, run_dir: Path, labels: Mapping[str, str]
) -> Evaluation:
    sandbox = choose_sandbox(settings)
    spec = SandboxSpec(
        argv=entry_argv(submission_dir, sandbox.python),
        submission_dir=submission_dir,
        wall_timeout_s=settings.run_timeout_s,
        memory_mb=settings.run_memory_mb,
        pids_max=settings.run_pids_max,
        cpus=settings.run_cpus,
        scratch_mb=settings.scratch_mb,
        output_cap_bytes=settings.log_cap_bytes,
        labels=labels,
    )
    result = sandbox.run(spec)
    logs = combined_logs(result)
    metrics = {
        "sandbox": sandbox.name,
        "exit_kind": result.exit_kind.value,
        "exit_code": result.exit_code,
        "wall_s": round(result.wall_s, 4),
        "peak_memory_bytes": result.peak_memory_bytes,
    }
    if result.exit_kind is ExitKind.TIMEOUT:
        raise RunFailed(
            FailureReason.RUN_TIMEOUT,
            f"The run was stopped after its limit of {settings.run_timeout_s:g} s.",
            logs=logs,
        )
    if result.exit_kind is ExitKind.MEMORY_LIMIT:
        raise RunFailed(
            FailureReason.MEMORY_LIMIT,
            f"The run exceeded its memory limit of {settings.run_memory_mb} MB.",
            logs=logs,
        )
    if not result.ok:
        how = (
            f"exited with code {result.exit_code}"
            if result.exit_kind is ExitKind.EXITED
            else "was killed"
        )
        raise RunFailed(FailureReason.CRASHED, f"The submission {how}.", logs=logs)
    return Evaluation(metrics=metrics, logs=logs)

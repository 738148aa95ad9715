"""Drift watch: no result is timed on a slow host.

Every worker times the task's own baseline submission (``<task>/baseline/``) and publishes its
ranked score in Redis (``calibration.py``, which also derives the worker's run-to-run spread from
the recent timings). A worker whose figure is off the fleet's median by more than the task's
``drift_tolerance`` (a throttled GPU, a noisy neighbour) stops taking jobs, says so in its log and
shows as drifting to admins, until a later check finds it back in line.

Calibration never overlaps a timed run: the worker checks only between its jobs, and only when no
job waits for it (a check more than an interval overdue goes first), so the first job does not
wait for it either. It runs ``calibration.MIN_RUNS`` timings back to back while idle at start, then
one every ``EDC_DRIFT_INTERVAL_S``. On a host shared by several workers each owns its cores
(``EDC_CPUS``), so one worker's calibration never shares cores with another's timed run.

The measurement runs in a child process (``python -m edc.worker.drift``), the same way the work
itself runs in a work-horse: the worker process never starts a sandbox itself.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edc.config import Settings, get_settings
from edc.errors import EdcError, RunFailed
from edc.harness.evaluate import evaluate_submission
from edc.sandbox.backends import choose_sandbox
from edc.scheduler.connection import redis_connection, redis_errors
from edc.scheduler.fleet import drifting_key
from edc.tasks.task import RequestCounts, Task, load_task
from edc.worker.calibration import MIN_RUNS, figures_key, fleet, record

log = logging.getLogger(__name__)

MEASURE_TIMEOUT_S = 600


def calibration_requests(task: Task) -> RequestCounts:
    """The task's own latency scenario (so the spread is that of a real score), a short rest."""
    counts = task.requests
    return RequestCounts(
        warmup=min(counts.warmup, 2), timed=counts.timed, throughput=2, repeats=counts.repeats
    )


def measure(settings: Settings) -> float:
    """The ranked score of the task's baseline, on the public prompts, in this worker's sandbox."""
    task = load_task(settings)
    if task.baseline_dir is None:
        raise EdcError(f"The task {task.name} has no baseline/ submission to time.")
    with tempfile.TemporaryDirectory(prefix="edc-drift-") as run_dir:
        result = evaluate_submission(
            settings=settings,
            sandbox=choose_sandbox(settings, task.runtime),
            submission_dir=task.baseline_dir,
            task=task.with_requests(calibration_requests(task)),
            run_dir=Path(run_dir),
            prompt_set="public",
            labels={"stage": "drift"},
        )
    return float(result.metrics["score"])


@dataclass(frozen=True)
class Verdict:
    mine_ms: float
    fleet_median_ms: float | None  # None while fewer than two workers have a fresh figure
    drifting: bool


def judge(mine: float, others: list[float], tolerance: float) -> Verdict:
    """Compare with the fleet (this worker included); a lone worker has nothing to drift from."""
    if not others:
        return Verdict(mine, None, False)
    median = statistics.median([mine, *others])
    return Verdict(mine, median, abs(mine / median - 1.0) > tolerance)


class DriftWatch:
    """The worker's side: when a check is due, measure in a child process and judge."""

    def __init__(self, settings: Settings, worker_name: str, hardware_class: str) -> None:
        self.settings = settings
        self.worker_name = worker_name
        self.hardware_class = hardware_class
        self.tolerance = load_task(settings).spec.hardware.drift_tolerance
        # Due at once, but overdue (taken before a waiting job) only an interval later.
        self.next_check = time.monotonic()
        self.runs = 0
        self.drifting = False

    def due(self) -> bool:
        return time.monotonic() >= self.next_check

    def overdue(self) -> bool:
        return time.monotonic() >= self.next_check + self.settings.drift_interval_s

    def check(self) -> Verdict | None:
        self.runs += 1
        # Back to back while idle until the spread can be measured, then once an interval.
        pause = 0.0 if self.runs < MIN_RUNS else self.settings.drift_interval_s
        self.next_check = time.monotonic() + pause
        try:
            mine = self._measure_in_child()
        except (EdcError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            log.warning(
                "drift check of %s failed; keeping the last verdict: %s", self.worker_name, exc
            )
            return None
        with redis_errors():
            verdict = self._publish_and_judge(mine)
        if verdict.drifting != self.drifting:
            self.drifting = verdict.drifting
            level = logging.ERROR if verdict.drifting else logging.INFO
            log.log(
                level,
                "worker %s %s: baseline score %.4g vs fleet median %s (tolerance %.0f%%)",
                self.worker_name,
                "drifts and stops taking jobs" if verdict.drifting else "is back in line",
                verdict.mine_ms,
                f"{verdict.fleet_median_ms:.3f}" if verdict.fleet_median_ms else "-",
                100 * self.tolerance,
            )
        return verdict

    def _measure_in_child(self) -> float:
        done = subprocess.run(
            [sys.executable, "-m", "edc.worker.drift"],
            capture_output=True,
            text=True,
            timeout=MEASURE_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise EdcError(f"the baseline run failed: {done.stderr.strip()[-500:]}")
        return float(json.loads(done.stdout.strip().splitlines()[-1])["score"])

    def _publish_and_judge(self, mine: float) -> Verdict:
        connection = redis_connection(self.settings)
        key = figures_key(self.settings, self.hardware_class)
        published = record(self.settings, self.worker_name, self.hardware_class, mine)
        fresh_after = published.at - 2 * self.settings.drift_interval_s
        others = []
        for name, figures in fleet(self.settings, self.hardware_class).items():
            if name == self.worker_name:
                continue
            if figures.at < fresh_after:
                connection.hdel(key, name)  # a worker gone for long: not the fleet any more
                continue
            others.append(figures.latest)
        verdict = judge(mine, others, self.tolerance)
        if verdict.drifting:
            connection.sadd(drifting_key(self.settings), self.worker_name)
        else:
            connection.srem(drifting_key(self.settings), self.worker_name)
        return verdict

    def forget(self) -> None:
        """On the worker's way out: its figure and flag leave the fleet with it."""
        with redis_errors():
            connection = redis_connection(self.settings)
            connection.hdel(figures_key(self.settings, self.hardware_class), self.worker_name)
            connection.srem(drifting_key(self.settings), self.worker_name)


def main() -> None:
    """The child process: time the baseline once and print {"score": ...}."""
    try:
        value = measure(get_settings())
    except (EdcError, RunFailed) as exc:
        print(exc.message, file=sys.stderr)  # noqa: T201 - the parent reads it
        sys.exit(1)
    print(json.dumps({"score": value}))  # noqa: T201 - the parent reads it


if __name__ == "__main__":
    main()

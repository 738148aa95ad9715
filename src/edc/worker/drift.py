"""Drift watch: no result is timed on a slow host.

Every worker times the task's own baseline submission (``<task>/baseline/``) at start and then
every ``EDC_DRIFT_INTERVAL_S``, and publishes its TPOT p50 in Redis. A worker whose figure is off
the fleet's median by more than the task's ``drift_tolerance`` (a throttled GPU, a noisy
neighbour) stops taking jobs, says so in its log and shows as drifting to admins, until a later
check finds it back in line.

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
from edc.harness.evaluate import evaluate_submission, load_task
from edc.sandbox.select import choose_sandbox
from edc.scheduler.queue import drifting_key, redis_connection, redis_errors
from edc.tasks.task import RequestCounts
from edc.worker.evaluation import public_check_task

log = logging.getLogger(__name__)

MEASURE_TIMEOUT_S = 600
# Enough timed requests for a stable median, few enough to take seconds.
DRIFT_REQUESTS = RequestCounts(warmup=2, timed=8, throughput=2, repeats=1)


def _figures_key(settings: Settings, hardware_class: str) -> str:
    return f"edc:{settings.deployment_id}:baseline:{hardware_class}"


def measure(settings: Settings) -> float:
    """TPOT p50 (ms) of the task's baseline, on the public prompts, in this worker's sandbox."""
    task = load_task(settings)
    if task.baseline_dir is None:
        raise EdcError(f"The task {task.name} has no baseline/ submission to time.")
    with tempfile.TemporaryDirectory(prefix="edc-drift-") as run_dir:
        result = evaluate_submission(
            settings=settings,
            sandbox=choose_sandbox(settings),
            submission_dir=task.baseline_dir,
            task=public_check_task(task, requests=DRIFT_REQUESTS),
            run_dir=Path(run_dir),
            prompt_set="public",
            labels={"stage": "drift"},
        )
    return float(result.metrics["latency"]["tpot_ms"]["p50"])


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
        self.next_check = 0.0  # due at once: the first check runs before the first job
        self.drifting = False

    def due(self) -> bool:
        return time.monotonic() >= self.next_check

    def check(self) -> Verdict | None:
        self.next_check = time.monotonic() + self.settings.drift_interval_s
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
                "worker %s %s: baseline TPOT p50 %.3f ms vs fleet median %s ms (tolerance %.0f%%)",
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
        return float(json.loads(done.stdout.strip().splitlines()[-1])["tpot_ms_p50"])

    def _publish_and_judge(self, mine: float) -> Verdict:
        connection = redis_connection(self.settings)
        key = _figures_key(self.settings, self.hardware_class)
        now = time.time()
        connection.hset(key, self.worker_name, json.dumps({"tpot_ms": mine, "at": now}))
        fresh_after = now - 2 * self.settings.drift_interval_s
        others = []
        for name, raw in connection.hgetall(key).items():
            figure = json.loads(raw)
            if (name.decode() if isinstance(name, bytes) else name) == self.worker_name:
                continue
            if figure["at"] < fresh_after:
                connection.hdel(key, name)  # a worker gone for long: not the fleet any more
                continue
            others.append(float(figure["tpot_ms"]))
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
            connection.hdel(_figures_key(self.settings, self.hardware_class), self.worker_name)
            connection.srem(drifting_key(self.settings), self.worker_name)


def main() -> None:
    """The child process: time the baseline once and print {"tpot_ms_p50": ...}."""
    try:
        value = measure(get_settings())
    except (EdcError, RunFailed) as exc:
        print(exc.message, file=sys.stderr)  # noqa: T201 - the parent reads it
        sys.exit(1)
    print(json.dumps({"tpot_ms_p50": value}))  # noqa: T201 - the parent reads it


if __name__ == "__main__":
    main()

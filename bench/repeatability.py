"""Does a score repeat? The same archive evaluated several times, on a pinned worker, quiet and
beside a busy neighbour; and does the interval shown cover the next run?

    python bench/repeatability.py              # 7 runs per case, about five minutes on two cores
    python bench/repeatability.py --runs 9 --archive examples/kvcache

As a worker does: the worker owns core 0 (its sandboxes are pinned there, the harness shares it,
as with ``edc up --workers 2`` on two cores), it calibrates first (the task's baseline timed
``calibration.MIN_RUNS`` times: its run-to-run spread), then evaluates the archive on the hidden
pool with a fresh secret each time and widens each interval by the spread (docs/uncertainty.md).

    quiet       nothing else runs
    neighbour   a second "worker" on core 1 times the baseline example over and over

Printed per case: the ranked scores, their CV (goal ≤ 3% quiet, ≤ 5% beside the neighbour), the
median's shift against quiet (goal ≤ 5%), and coverage: the share of ordered pairs of runs (i, j)
where run j's score lies in run i's interval (goal ≥ 0.90). Asserts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from edc.config import Settings
from edc.harness.evaluate import evaluate_submission
from edc.harness.metrics import widen_for_run_to_run
from edc.sandbox.backends import choose_sandbox
from edc.tasks.task import Prompt, Task, bundled_task_dir
from edc.worker.calibration import MIN_RUNS, relative_spread, with_floor
from edc.worker.drift import calibration_requests

REPO = Path(__file__).resolve().parents[1]


def evaluate(
    settings: Settings, task: Task, pool: list[Prompt], archive: Path, scratch: Path
) -> Any:
    return evaluate_submission(
        settings=settings,
        sandbox=choose_sandbox(settings),
        submission_dir=archive,
        task=task,
        run_dir=Path(tempfile.mkdtemp(dir=scratch)),
        pool=pool,
    ).metrics


def neighbour(stop: Any, scratch: str) -> None:
    """Time the baseline on core 1 until told to stop."""
    os.sched_setaffinity(0, {1})
    settings = Settings(sandbox="bwrap", data_dir=Path(scratch) / "n", cpus="1")
    task = Task.load(bundled_task_dir())
    calibrating = task.with_requests(calibration_requests(task))
    while not stop.is_set():
        evaluate_submission(
            settings=settings,
            sandbox=choose_sandbox(settings),
            submission_dir=bundled_task_dir() / "baseline",
            task=calibrating,
            run_dir=Path(tempfile.mkdtemp(dir=scratch)),
            prompt_set="public",
        )


def case(runs: int, archive: Path, scratch: Path) -> dict[str, Any]:
    settings = Settings(sandbox="bwrap", data_dir=scratch / "w", cpus="0")
    task = Task.load(bundled_task_dir())
    pool = task.new_hidden_pool()
    calibrating = task.with_requests(calibration_requests(task))
    baseline = [
        evaluate(
            settings, calibrating, task.public_prompts(), task.baseline_dir or archive, scratch
        )["score"]
        for _ in range(MIN_RUNS)
    ]
    prior = task.hardware.run_to_run_spread
    measured = relative_spread(baseline)
    spread = with_floor(measured, prior) if measured is not None else prior
    scores, within, widened = [], [], []
    for _ in range(runs):
        m = evaluate(settings, task, pool, archive, scratch)
        scores.append(m["score"])
        within.append(tuple(m["score_ci"]))
        widened.append(widen_for_run_to_run(m["score"], m["score_ci"], spread))

    def coverage(intervals: list[Any]) -> float:
        pairs = list(itertools.permutations(range(runs), 2))
        return sum(intervals[i][0] <= scores[j] <= intervals[i][1] for i, j in pairs) / len(pairs)

    return {
        "scores": scores,
        "cv": statistics.stdev(scores) / statistics.fmean(scores),
        "median": statistics.median(scores),
        "spread": spread,
        "coverage": coverage(widened),
        "coverage_within_only": coverage(within),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--archive", type=Path, default=REPO / "examples" / "kvcache")
    parser.add_argument("--quiet-only", action="store_true", help="skip the neighbour case")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs two cores: the worker's and the neighbour's")
    scratch = Path(tempfile.mkdtemp(prefix="edc-repeat-"))
    os.sched_setaffinity(0, {0})  # the worker process: its own core only, as under `edc up`
    results = {"quiet": case(args.runs, args.archive, scratch)}
    if not args.quiet_only:
        stop = multiprocessing.Event()
        busy = multiprocessing.Process(target=neighbour, args=(stop, str(scratch)), daemon=True)
        busy.start()
        try:
            results["neighbour"] = case(args.runs, args.archive, scratch)
        finally:
            stop.set()
            busy.join(timeout=120)
    quiet_median = results["quiet"]["median"]
    print(
        f"{'case':<10} {'median ms':>9} {'shift':>6} {'CV':>6} {'spread':>7} "
        f"{'coverage':>8} {'(within)':>8}  scores"
    )
    for name, r in results.items():
        shift = r["median"] / quiet_median - 1
        scores = " ".join(f"{s:.3f}" for s in r["scores"])
        print(
            f"{name:<10} {r['median']:>9.4f} {shift:>+6.1%} {r['cv']:>6.1%} {r['spread']:>7.1%} "
            f"{r['coverage']:>8.2f} {r['coverage_within_only']:>8.2f}  {scores}"
        )


if __name__ == "__main__":
    main()

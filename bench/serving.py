"""Benchmark of the serving scenario, through the real bubblewrap sandbox.

    python bench/serving.py              # about 1 minute on two cores

Evaluates ``examples/kvcache`` and ``examples/batched`` on the bundled tiny-serving task (loaded
in place: it reaches its model and public prompts through ``../tiny``) and prints, for each, the
highest offered rate held under the SLO with its bracket, the sweep as measured, the harness's
send lag p99 at the highest rate tried, and the evaluation's wall time; then the ratio of the two
maximum rates. Goal: batched ≥ 1.5 × kvcache, with brackets that do not overlap (the difference is
more than the sweep's resolution).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from edc.config import Settings
from edc.harness.evaluate import evaluate_submission
from edc.sandbox.backends import choose_sandbox
from edc.sandbox.base import Sandbox
from edc.sandbox.cpus import available_cpus
from edc.tasks.task import Task, bundled_task_dir

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = ("kvcache", "batched")
GOAL_RATIO = 1.5


def serving_task() -> Task:
    return Task.load(bundled_task_dir().parent / "tiny_serving")


def evaluate(
    settings: Settings, sandbox: Sandbox, submission: Path, task: Task, scratch: Path
) -> tuple[dict[str, Any], float]:
    """The serving block of one evaluation on the public prompts, and its wall time (s)."""
    run_dir = Path(tempfile.mkdtemp(dir=scratch))
    started = time.monotonic()
    m = evaluate_submission(
        settings=settings,
        sandbox=sandbox,
        submission_dir=submission,
        task=task,
        run_dir=run_dir,
        prompt_set="public",
    ).metrics
    return m["serving"], time.monotonic() - started


def sweep_line(serving: dict[str, Any]) -> str:
    """The rates in the order measured, each marked held (✓) or missed (✗)."""
    return " ".join(
        f"{r['offered_rate']:g}{'✓' if r['attained'] else '✗'}" for r in serving["rates"]
    )


def lag_at_highest(serving: dict[str, Any]) -> float:
    """Send lag p99 (ms) at the highest offered rate tried (its worst round if measured twice)."""
    top = max(r["offered_rate"] for r in serving["rates"])
    return max(float(r["send_lag_ms"]["p99"]) for r in serving["rates"] if r["offered_rate"] == top)


def main() -> None:
    load1, load5, _ = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load1:.2f} (1 min) {load5:.2f} (5 min)")
    task = serving_task()
    spec = task.serving
    assert spec is not None, f"{task.name} has no [serving] section"
    print(
        f"\n== serving sweep on {task.name}: rates {list(spec.rates)}, "
        f"{spec.requests_per_rate} requests per rate, SLO TTFT ≤ {spec.ttft_slo_ms:g} ms and "
        f"{spec.tpot_slo_ms:g} ms per further token for {spec.target_share:.0%} of requests"
    )
    with tempfile.TemporaryDirectory(prefix="edc-bench-") as tmp:
        scratch = Path(tmp)
        # Cores split as a worker splits them (edc up: the submission on its own, the harness on
        # the rest), so the send lag printed is a worker's.
        cores = available_cpus()
        owned = str(cores[0]) if len(cores) >= 2 else None
        settings = Settings(sandbox="bwrap", data_dir=scratch / "data", cpus=owned)
        sandbox = choose_sandbox(settings)
        results = {
            name: evaluate(settings, sandbox, REPO / "examples" / name, task, scratch)
            for name in EXAMPLES
        }
    print(
        f"{'example':<10} {'max rate req/s':>15} {'bracket':>15} {'lag p99 ms @top':>16} "
        f"{'eval s':>7}  sweep (order measured)"
    )
    for name, (serving, wall) in results.items():
        low, high = serving["max_rate_under_slo_bracket"]
        print(
            f"{name:<10} {serving['max_rate_under_slo']:>15.4g} {f'{low:g} – {high:g}':>15} "
            f"{lag_at_highest(serving):>16.3f} {wall:>7.1f}  {sweep_line(serving)}"
        )
    kvcache, batched = results["kvcache"][0], results["batched"][0]
    ratio = (
        batched["max_rate_under_slo"] / kvcache["max_rate_under_slo"]
        if kvcache["max_rate_under_slo"] > 0
        else float("inf")
    )
    apart = batched["max_rate_under_slo_bracket"][0] >= kvcache["max_rate_under_slo_bracket"][1]
    met = ratio >= GOAL_RATIO and apart
    print(f"batched / kvcache max rate under SLO: {ratio:.2f}×")
    print(
        f"goal (batched ≥ {GOAL_RATIO}× kvcache, brackets apart): "
        f"{'met' if met else 'NOT met'} (ratio {ratio:.2f}, brackets "
        f"{'apart' if apart else 'overlap'})"
    )


if __name__ == "__main__":
    main()

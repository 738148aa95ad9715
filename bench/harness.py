"""Benchmarks of the decode harness, through the real bubblewrap sandbox.

    python bench/harness.py              # all three parts (about two minutes on two cores)
    python bench/harness.py --only overhead

1. examples: the three example submissions' TPOT and throughput side by side, with ratios to the
   baseline (on the bundled model, fewer requests than the full task so the baseline stays short).
2. overhead: the harness's own cost, against submissions that answer instantly: TPOT (µs per
   token) and TTFT (the round trip of one request), both for an executable speaking the protocol
   itself and for a Python class behind the shim; plus the harness process's CPU time per token.
   Goal: ≤ 50 µs per token.
3. stability: the coefficient of variation of TPOT p50 over 5 full evaluations of ``kvcache`` on
   the bundled task. Goal: ≤ 3%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from edc.config import Settings
from edc.harness import metrics
from edc.harness.evaluate import evaluate_submission
from edc.harness.runner import RequestSpec, SessionLimits, SessionPlan, run_session
from edc.sandbox.backends import choose_sandbox
from edc.sandbox.base import Sandbox
from edc.tasks.task import Task, bundled_task_dir

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = ("baseline", "kvcache", "batched")


def reduced_task(root: Path, *, timed: int, throughput: int) -> Task:
    """The bundled task with fewer requests (same model, prompts, rule and limits)."""
    source = bundled_task_dir()
    text = (source / "task.toml").read_text()
    counts = {"warmup": 1, "timed": timed, "throughput": throughput, "repeats": 1}
    lines = []
    for line in text.splitlines():
        key = line.split("=")[0].strip()
        lines.append(f"{key} = {counts[key]}" if key in counts else line)
    root.mkdir(parents=True)
    (root / "task.toml").write_text("\n".join(lines) + "\n")
    (root / "model").symlink_to(source / "model")
    (root / "prompts").symlink_to(source / "prompts")
    return Task.load(root)


def evaluate(
    settings: Settings, sandbox: Sandbox, submission: Path, task: Task, scratch: Path
) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(dir=scratch))
    return evaluate_submission(
        settings=settings, sandbox=sandbox, submission_dir=submission, task=task, run_dir=run_dir
    ).metrics


def bench_examples(settings: Settings, sandbox: Sandbox, scratch: Path) -> None:
    task = reduced_task(scratch / "task-examples", timed=4, throughput=16)
    print(
        f"\n== examples on {task.name} ({task.max_new_tokens} tokens per request; "
        f"{task.requests.timed} latency requests, {task.requests.throughput} at once)"
    )
    rows = {}
    for name in EXAMPLES:
        started = time.monotonic()
        m = evaluate(settings, sandbox, REPO / "examples" / name, task, scratch)
        rows[name] = (
            m["latency"]["tpot_ms"]["p50"],
            m["latency"]["ttft_ms"]["p50"],
            m["throughput"]["output_tokens_per_s"],
            time.monotonic() - started,
        )
    base_tpot, _, base_tps, _ = rows["baseline"]
    print(
        f"{'example':<10} {'TPOT p50 ms':>12} {'TTFT p50 ms':>12} {'tokens/s':>10} "
        f"{'TPOT ×faster':>13} {'tokens/s ×':>11} {'eval s':>7}"
    )
    for name, (tpot, ttft, tps, wall) in rows.items():
        print(
            f"{name:<10} {tpot:>12.3f} {ttft:>12.2f} {tps:>10.1f} "
            f"{base_tpot / tpot:>13.1f} {tps / base_tps:>11.1f} {wall:>7.1f}"
        )
    k, b = rows["kvcache"], rows["batched"]
    print(f"batched / kvcache throughput: {b[2] / k[2]:.2f}×")


INSTANT_NATIVE = f"""\
#!{sys.executable}
import json, os, socket
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(os.environ["EDC_SOCKET"])
reader = sock.makefile("rb")
reader.readline()
sock.sendall(b'{{"op":"ready"}}\\n')
for line in reader:
    message = json.loads(line)
    if message["op"] == "shutdown":
        break
    chunk = ('{{"id":"%s","tokens":[65]}}\\n' % message["id"]).encode()
    for _ in range(message["max_new_tokens"]):
        sock.sendall(chunk)
    sock.sendall(('{{"id":"%s","done":true}}\\n' % message["id"]).encode())
"""

# Like INSTANT_NATIVE, but one token every PACE_US (busy-waiting, so each token is its own
# wake-up of the harness, as with a real decoder), noting on stderr when each was written and
# when each generate was read: the sandbox shares the host's monotonic clock.
PACE_US = 300
PACED_NATIVE = f"""\
#!{sys.executable}
import json, os, socket, sys, time
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(os.environ["EDC_SOCKET"])
reader = sock.makefile("rb")
reader.readline()
sock.sendall(b'{{"op":"ready"}}\\n')
read_at, written_at = {{}}, {{}}
for line in reader:
    now = time.monotonic_ns()
    message = json.loads(line)
    if message["op"] == "shutdown":
        break
    rid = message["id"]
    read_at[rid] = now
    written_at[rid] = stamps = []
    chunk = ('{{"id":"%s","tokens":[65]}}\\n' % rid).encode()
    for _ in range(message["max_new_tokens"]):
        stamps.append(time.monotonic_ns())
        sock.sendall(chunk)
        until = time.monotonic_ns() + {PACE_US} * 1000
        while time.monotonic_ns() < until:
            pass
    sock.sendall(('{{"id":"%s","done":true}}\\n' % rid).encode())
sys.stderr.write("CLOCK " + json.dumps([read_at, written_at]) + "\\n")
"""

INSTANT_PYTHON = """\
class Decoder:
    def __init__(self, model_dir):
        pass

    def step(self, requests):
        for request in requests:
            yield request.id, [65]
"""


def overhead_plan(requests: int, tokens: int, throughput: int = 8) -> SessionPlan:
    return SessionPlan(
        warmup=(RequestSpec("w0", (1,) * 16),),
        latency=(tuple(RequestSpec(f"l{i}", (1,) * 64) for i in range(requests)),),
        throughput=(tuple(RequestSpec(f"t{i}", (1,) * 64) for i in range(throughput)),),
        max_new_tokens=tokens,
        vocab_size=256,
        sampling={"rule": "greedy", "seed": 1},
        load_sampling={"rule": "greedy"},
    )


def _submission(scratch: Path, name: str, files: dict[str, str]) -> Path:
    path = scratch / name
    path.mkdir()
    for file, text in files.items():
        (path / file).write_text(text)
        if file == "run":
            (path / file).chmod(0o755)
    return path


def _session(sandbox: Sandbox, submission: Path, plan: SessionPlan, scratch: Path) -> Any:
    return run_session(
        sandbox=sandbox,
        submission_dir=submission,
        model_dir=bundled_task_dir() / "model",
        run_dir=Path(tempfile.mkdtemp(dir=scratch)),
        plan=plan,
        limits=SessionLimits(load_timeout_s=30, run_timeout_s=120, cpus=1.0),
    )


def _us(values: list[float]) -> str:
    s = metrics.summarize(values)
    return f"p50 {s['p50'] / 1e3:7.1f}  p99 {s['p99'] / 1e3:7.1f}  mean {s['mean'] / 1e3:7.1f}"


def bench_overhead(sandbox: Sandbox, scratch: Path) -> None:
    print("\n== harness overhead against submissions that answer instantly (goal ≤ 50 µs/token)")
    native = _submission(scratch, "instant-native", {"run": INSTANT_NATIVE})
    python = _submission(
        scratch, "instant-python", {"submission.py": textwrap.dedent(INSTANT_PYTHON)}
    )
    print(
        f"{'submission':<22} {'TTFT p50 µs':>12} {'TTFT min µs':>12} {'tokens/s carried':>17} "
        f"{'harness CPU µs/token':>21}"
    )
    for label, submission in (("executable (direct)", native), ("Python class (shim)", python)):
        # TTFT on short requests (a long burst just before would charge the scheduler's debt of
        # the burst to the next request); the pipe's capacity on 8 × 2048 tokens at once.
        short = _session(sandbox, submission, overhead_plan(40, 16, throughput=1), scratch)
        cpu_before = time.process_time()
        burst = _session(sandbox, submission, overhead_plan(1, 2048, throughput=8), scratch)
        cpu = time.process_time() - cpu_before  # sandbox start included, spread over 20k tokens
        total_tokens = sum(len(r.tokens) for r in burst.all_records())
        ttfts = [r.timing().ttft_ns / 1e3 for r in short.latency[0]]
        run = burst.throughput
        rate = metrics.output_tokens_per_s(run.tokens, run.start_ns, run.end_ns)
        print(
            f"{label:<22} {statistics.median(ttfts):>12.1f} {min(ttfts):>12.1f} {rate:>17.0f} "
            f"{cpu / total_tokens * 1e6:>21.1f}"
        )

    paced = _submission(scratch, "paced-native", {"run": PACED_NATIVE})
    result = _session(sandbox, paced, overhead_plan(10, 64, throughput=1), scratch)
    line = next(x for x in result.logs.splitlines() if x.startswith("CLOCK "))
    read_at, written_at = json.loads(line.removeprefix("CLOCK "))
    stamp_delay, delivery = [], []
    for record in result.latency[0]:
        rid = record.request_id
        delivery.append(float(read_at[rid] - record.sent_ns))
        stamp_delay += [
            float(s - w) for s, w in zip(record.stamps_ns, written_at[rid], strict=True)
        ]
    tpot = metrics.latency_metrics([r.timing() for r in result.latency[0]])["tpot_ms"]
    print(
        f"\none token every {PACE_US} µs, {len(stamp_delay)} tokens "
        "(the sandbox shares the host's monotonic clock):"
    )
    print(f"  written → stamped by the harness (µs): {_us(stamp_delay)}")
    print(f"  generate sent → read by the submission (µs): {_us(delivery)}")
    print(
        f"  measured TPOT p50 {tpot['p50'] * 1e3:.1f} µs against the paced {PACE_US} µs: "
        f"{(tpot['p50'] * 1e3 - PACE_US):+.1f} µs"
    )


def bench_stability(settings: Settings, sandbox: Sandbox, scratch: Path, runs: int) -> None:
    task = Task.load(bundled_task_dir())
    print(f"\n== TPOT p50 of kvcache over {runs} full evaluations of {task.name} (goal CV ≤ 3%)")
    values, scores = [], []
    for i in range(runs):
        m = evaluate(settings, sandbox, REPO / "examples" / "kvcache", task, scratch)
        values.append(m["latency"]["tpot_ms"]["p50"])
        scores.append(m["score"])
        low, high = m["score_ci"]
        load1, repeats = os.getloadavg()[0], len(m["score_repeats"])
        print(
            f"run {i + 1}: TPOT p50 {values[-1]:.4f} ms; score (median of {repeats} repeats) "
            f"{scores[-1]:.4f} ms, 95% CI {low:.4f} – {high:.4f}; load {load1:.2f}"
        )
    for label, series in (("TPOT p50", values), ("score", scores)):
        mean = statistics.fmean(series)
        cv = statistics.stdev(series) / mean if len(series) > 1 else 0.0
        print(f"{label}: mean {mean:.4f} ms, CV {cv * 100:.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("examples", "overhead", "stability"))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    load1, load5, _ = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load1:.2f} (1 min) {load5:.2f} (5 min)")
    with tempfile.TemporaryDirectory(prefix="edc-bench-") as tmp:
        scratch = Path(tmp)
        settings = Settings(sandbox="bwrap", data_dir=scratch / "data")
        sandbox = choose_sandbox(settings)
        if args.only in (None, "overhead"):
            bench_overhead(sandbox, scratch)
        if args.only in (None, "examples"):
            bench_examples(settings, sandbox, scratch)
        if args.only in (None, "stability"):
            bench_stability(settings, sandbox, scratch, args.runs)


if __name__ == "__main__":
    main()

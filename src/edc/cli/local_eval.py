"""``edc eval PATH [--task DIR] [--json]``: evaluate a submission here, exactly as the worker does.

Same code path (:func:`~edc.harness.evaluate.evaluate_submission`), same sandbox, same checks; a
live progress display on stderr, then a result table (or one JSON object) on stdout. The exit code
is 0 when the submission is correct and timed, 1 when the submission fails, 2 when the evaluation
could not run (no sandbox here, an unusable task or path, a failure of the platform's own).
"""

from __future__ import annotations

import json
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edc import archive
from edc.config import Settings
from edc.errors import InvalidTask, InvalidUpload, RunFailed, SandboxUnavailable
from edc.harness.evaluate import Evaluation, ProgressEvent, PromptSet, evaluate_submission
from edc.sandbox.backends import choose_sandbox
from edc.sandbox.base import Sandbox
from edc.sandbox.unconfined import NAME as UNCONFINED
from edc.sandbox.unconfined import UnconfinedSandbox
from edc.status import FailureReason
from edc.tasks.task import load_task

EXIT_OK = 0
EXIT_SUBMISSION_FAILED = 1
EXIT_CANNOT_RUN = 2
LOG_TAIL_LINES = 40
# After a failure of the platform's own: a worker would retry it, `edc eval` does not.
INFRASTRUCTURE_NOTE = (
    "Not the submission's fault, and not retried here (a worker retries such a failure): run "
    "`edc eval` again. A late harness is less likely on a quieter machine, or with EDC_CPUS "
    "leaving the harness a core of its own."
)

_PHASE_LABELS = {
    "start": "starting the sandbox",
    "load": "loading",
    "warmup": "warm-up",
    "latency": "latency (one at a time)",
    "throughput": "throughput (all at once)",
    # done/total count rounds here, one offered rate each, against the most the sweep may take;
    # a sweep that ends sooner says so (done = total), so the bar ends full.
    "serving": "serving sweep (rounds)",
    "verify": "verifying every token",
    "done": "done",
}


def run_eval(
    path: Path,
    task_dir: Path | None,
    as_json: bool,
    settings: Settings,
    sandbox_name: str | None = None,
) -> int:
    """Evaluate the submission at ``path`` (a directory or a zip); returns the exit code.

    ``sandbox_name`` overrides ``EDC_SANDBOX``; ``"none"`` runs the submission unconfined (one's
    own code only: a worker never can), and says so.
    """
    out = Console()
    err = Console(stderr=True)
    try:
        task = load_task(settings, task_dir)
        if sandbox_name == UNCONFINED:
            sandbox: Sandbox = UnconfinedSandbox()
            err.print(
                "[yellow]No sandbox:[/yellow] the submission runs as a plain process with your "
                "rights (--sandbox none); only for your own code."
            )
        else:
            if sandbox_name is not None:
                settings = settings.model_copy(update={"sandbox": sandbox_name})
            sandbox = choose_sandbox(settings, task.runtime)
    except (InvalidTask, SandboxUnavailable) as exc:
        return _cannot_run(out, err, exc.message, as_json)
    # Unconfined code could read the hidden prompts' file: it gets the public ones only.
    hidden = task.has_hidden_prompts() and sandbox_name != UNCONFINED
    prompt_set: PromptSet = "hidden" if hidden else "public"
    with tempfile.TemporaryDirectory(prefix="edc-eval-") as tmp:
        run_dir = Path(tmp)
        try:
            submission_dir = _submission_dir(path, run_dir, settings)
        except InvalidUpload as exc:
            failure = RunFailed(FailureReason.INVALID_ARCHIVE, exc.message)
            return _failed(out, err, failure, as_json)
        except FileNotFoundError as exc:
            return _cannot_run(out, err, str(exc), as_json)
        try:
            with _ProgressDisplay(err) as display:
                evaluation = evaluate_submission(
                    settings=settings,
                    sandbox=sandbox,
                    submission_dir=submission_dir,
                    task=task,
                    run_dir=run_dir / "run",
                    prompt_set=prompt_set,
                    progress=display.update,
                    labels={"eval": "local"},
                )
        except RunFailed as exc:
            return _failed(out, err, exc, as_json)
        except SandboxUnavailable as exc:
            return _cannot_run(out, err, exc.message, as_json)
    if as_json:
        _emit_json(
            {
                "status": "completed",
                "task": task.name,
                "prompts": prompt_set,
                "sandbox": sandbox.identity(),
                "metrics": evaluation.metrics,
                "logs": evaluation.logs,
            }
        )
    else:
        out.print(result_table(evaluation, task_name=task.name, prompt_set=prompt_set))
        out.print(f"Sandbox: {escape(sandbox.identity())}")
    return EXIT_OK


def _submission_dir(path: Path, run_dir: Path, settings: Settings) -> Path:
    if path.is_dir():
        return path.resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path} is neither a directory nor a zip file.")
    if not zipfile.is_zipfile(path):
        raise InvalidUpload(f"{path} is not a zip archive.")
    target = run_dir / "submission"
    archive.unpack(path, target, archive.ArchiveLimits.from_settings(settings))
    return target


class _ProgressDisplay:
    """One bar that follows the phases of an evaluation."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._bar = self._progress.add_task(_PHASE_LABELS["start"], total=None)

    def __enter__(self) -> _ProgressDisplay:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, event: ProgressEvent) -> None:
        self._progress.update(
            self._bar,
            description=_PHASE_LABELS.get(event.phase, event.phase),
            completed=event.done,
            total=event.total or None,
        )


def result_table(evaluation: Evaluation, *, task_name: str, prompt_set: str) -> Group:
    """Latency percentiles, the serving sweep where the task has one, then the summary figures."""
    m = evaluation.metrics
    latency = Table(title=f"{task_name}: correct, {m['tokens_checked']} tokens checked")
    latency.add_column("latency (ms)")
    for column in ("p50", "p90", "p99", "mean"):
        latency.add_column(column, justify="right")
    for name in ("e2e_per_token_ms", "ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        row = m["latency"][name]
        latency.add_row(name, *(f"{row[c]:.3f}" for c in ("p50", "p90", "p99", "mean")))
    summary = Table(show_header=False)
    summary.add_column("metric")
    summary.add_column("value")
    low, high = m["score_ci"]
    summary.add_row("score", f"{m['score']:.4g} ({m['score_metric']})")
    summary.add_row("score 95% interval", f"{low:.4g} – {high:.4g}")
    summary.add_row("output tok/s", f"{m['throughput']['output_tokens_per_s']:.1f}")
    serving = m.get("serving")
    if serving:
        summary.add_row("max rate under SLO", _max_rate(serving))
        summary.add_row("serving SLO", _slo(serving["slo"]))
    summary.add_row("load", f"{m['load_s']:.3f} s")
    summary.add_row("roofline", _roofline(m))
    summary.add_row("plausibility", _plausibility(m))
    summary.add_row("exact match rate", f"{m['exact_match_rate']:.3f}")
    summary.add_row("max gap", f"{m['max_gap']:.4g}")
    summary.add_row("prompts", prompt_set)
    if serving:
        return Group(latency, serving_table(serving), summary)
    return Group(latency, summary)


SERVING_COLUMNS = (
    "offered",
    "held",
    "SLO met",  # the share of the round's requests that met the SLO
    "goodput",
    "TTFT p99",
    "TPOT p99",  # reported: the SLO bounds E2E, which holding tokens back cannot shorten
    "E2E p99",
    "lag p99",
)


def serving_table(serving: dict[str, Any]) -> Table:
    """The serving sweep's rounds in the order measured: one offered rate each."""
    # Short headings, the units in the title: the table fits an 80-column terminal.
    table = Table(title="serving sweep, in the order measured (rates in req/s, times in ms)")
    for column in SERVING_COLUMNS:
        table.add_column(column, justify="left" if column == "held" else "right")
    for r in serving["rates"]:
        table.add_row(
            f"{r['offered_rate']:g}",
            "✓" if r["attained"] else "✗",
            f"{r['slo_attainment']:.0%}",
            f"{r['goodput']:.2f}",
            f"{r['ttft_ms']['p99']:.1f}",
            f"{r['tpot_ms']['p99']:.1f}",
            f"{r['e2e_ms']['p99']:.1f}",
            f"{r['send_lag_ms']['p99']:.3f}",
        )
    return table


def _slo(slo: dict[str, Any]) -> str:
    return (
        f"TTFT ≤ {slo['ttft_ms']:g} ms, then {slo['tpot_ms']:g} ms per further token, "
        f"for {slo['target_share']:.0%} of the requests at a rate"
    )


def _max_rate(serving: dict[str, Any]) -> str:
    low, high = serving["max_rate_under_slo_bracket"]
    return f"{serving['max_rate_under_slo']:g} req/s (bracket {low:g} – {high:g})"


def _plausibility(m: dict[str, Any]) -> str:
    check = m.get("plausibility")
    if not check:
        return "n/a (the task sets no physical floor)"
    verdict = "IMPLAUSIBLE: flagged for review" if check["implausible"] else "plausible"
    return f"{verdict} (floor {check['floor_ms']:.4f} ms × margin {check['margin']:g})"


def _roofline(m: dict[str, Any]) -> str:
    if m.get("roofline") is None:
        return "n/a"
    return (
        f"TPOT p50 = {m['roofline']:.2f} × the floor of {m['tpot_floor_ms']:.3f} ms "
        f"({m['bandwidth_gb_per_s']:.1f} GB/s)"
    )


def _failed(out: Console, err: Console, failure: RunFailed, as_json: bool) -> int:
    if as_json:
        _emit_json(
            {
                "status": "failed",
                "reason": failure.reason.value,
                "message": failure.message,
                "logs": failure.logs,
            }
        )
    else:
        if failure.logs.strip():
            tail = "\n".join(failure.logs.splitlines()[-LOG_TAIL_LINES:])
            err.print(f"[dim]last lines of the submission's logs:[/dim]\n{escape(tail)}")
        reason, message = failure.reason.value, escape(failure.message)
        out.print(f"[bold red]failed[/bold red] ({reason}): {message}")
        if failure.reason is FailureReason.INFRASTRUCTURE:
            out.print(INFRASTRUCTURE_NOTE)
    # The platform's failure says nothing of the submission: the evaluation could not run.
    if failure.reason is FailureReason.INFRASTRUCTURE:
        return EXIT_CANNOT_RUN
    return EXIT_SUBMISSION_FAILED


def _cannot_run(out: Console, err: Console, message: str, as_json: bool) -> int:
    if as_json:
        _emit_json({"status": "error", "message": message})
    else:
        err.print(f"[bold red]cannot evaluate:[/bold red] {escape(message)}")
    return EXIT_CANNOT_RUN


def _emit_json(obj: dict[str, Any]) -> None:
    # Plain stdout, not rich: JSON must never be wrapped or coloured.
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()

"""What the worker runs for one unpacked submission: the decode harness, in two stages.

1. A quick **public check** on the public prompts (a few requests): it fails broken submissions
   fast, and its output is the only output a participant may read (``public_logs``).
2. The **hidden evaluation**: the full timed scenarios on the hidden prompts, every token verified.
   Its output can echo hidden prompts, so it is for admins only (``logs``).

`edc eval` runs the same :func:`edc.harness.evaluate.evaluate_submission`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from edc import db
from edc.config import Settings
from edc.errors import RunFailed
from edc.harness.disclosure import public_sentence
from edc.harness.evaluate import evaluate_submission
from edc.harness.metrics import widen_for_run_to_run
from edc.models import DEFAULT_TRACK, Submission
from edc.services.tracks import TrackInfo, get_track
from edc.tasks.pool import hidden_pool
from edc.tasks.task import RequestCounts, Task, load_task, worker_class
from edc.worker.calibration import Calibrated, run_to_run_spread
from edc.worker.provenance import provenance, result_version_for
from edc.worker.sandboxes import track_sandbox

# Enough to load the model, answer both scenarios and be verified, in a few seconds.
PUBLIC_CHECK_REQUESTS = RequestCounts(warmup=1, timed=2, throughput=2, repeats=1)


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, Any]
    logs: str  # hidden run: admins only
    public_logs: str  # public check: the participant's
    # For organisers only (stored in ``submissions.audit``): what replays the hidden evaluation.
    audit: dict[str, Any] = dataclasses.field(default_factory=dict)


class StageFailed(RunFailed):
    """A stage failed; ``public_logs`` is what the participant may read of it."""

    def __init__(self, failure: RunFailed, *, message: str, public_logs: str) -> None:
        super().__init__(failure.reason, message, logs=failure.logs)
        self.public_logs = public_logs


def public_check_task(task: Task, requests: RequestCounts = PUBLIC_CHECK_REQUESTS) -> Task:
    """The task with fewer requests (the public check, the drift watch's baseline run)."""
    return task.with_requests(requests)


def run_to_run_interval(
    settings: Settings, track: TrackInfo, metrics: Mapping[str, Any], worker_id: str
) -> dict[str, Any]:
    """The score's interval widened by this worker's run-to-run spread in ``track``
    (docs/ranking.md); the interval of the repeats alone is kept as ``score_ci_within``."""
    task = track.task()
    spread = run_to_run_spread(
        settings,
        worker_id,
        Calibrated(worker_class(settings, task), track.name),
        prior=task.hardware.run_to_run_spread,
    )
    low, high = widen_for_run_to_run(metrics["score"], metrics["score_ci"], spread.value)
    return {
        "score_ci": [low, high],
        "score_ci_within": list(metrics["score_ci"]),
        "run_to_run_spread": spread.to_dict(),
    }


def submission_track(settings: Settings, submission_id: int) -> TrackInfo:
    """The track the submission competes in (read again while the database does not answer:
    an outage just after the claim must not fail the run)."""

    def read() -> TrackInfo:
        with db.session_scope(settings) as session:
            track = session.scalar(select(Submission.track).where(Submission.id == submission_id))
            return get_track(session, settings, track or DEFAULT_TRACK)

    return db.retry_while_unreachable(settings, read, what="reading the submission's track")


def evaluate(
    settings: Settings,
    *,
    submission_dir: Path,
    run_dir: Path,
    labels: Mapping[str, str],
    worker_id: str,
    track: TrackInfo | None = None,
) -> Evaluation:
    """Evaluate the submission on ``track``'s task (default: the configured task's)."""
    track = track or TrackInfo.configured(settings)
    task = load_task(settings, track.task_dir)
    sandbox = track_sandbox(settings, task.runtime)
    # Read first, while the row was just claimed: a database outage during the run then costs
    # nothing (the result is stored with retries at the end), as before the pool existed.
    pool = db.retry_while_unreachable(
        settings, lambda: hidden_pool(settings, task), what="reading the hidden prompt pool"
    )
    public_logs = ""
    if settings.public_check:
        try:
            check = evaluate_submission(
                settings=settings,
                sandbox=sandbox,
                submission_dir=submission_dir,
                task=public_check_task(task),
                run_dir=run_dir / "public",
                prompt_set="public",
                labels={**labels, "stage": "public"},
            )
        except RunFailed as exc:
            message = f"On the public prompts: {exc.message}"
            raise StageFailed(exc, message=message, public_logs=exc.logs) from exc
        public_logs = check.logs
    try:
        result = evaluate_submission(
            settings=settings,
            sandbox=sandbox,
            submission_dir=submission_dir,
            task=task,
            run_dir=run_dir / "hidden",
            pool=pool,
            labels={**labels, "stage": "hidden"},
        )
    except RunFailed as exc:
        # The participant reads harness-known facts only; organisers read the whole sentence.
        exc.logs = f"--- failure (organisers only) ---\n{exc.message}\n{exc.logs}"
        message = f"On the hidden prompts: {public_sentence(exc)}"
        raise StageFailed(exc, message=message, public_logs=public_logs) from exc
    metrics = {
        **result.metrics,
        **run_to_run_interval(settings, track, result.metrics, worker_id),
        "provenance": provenance(settings, sandbox=sandbox, task=task, worker_id=worker_id),
        # What the leaderboard compares it by: results of another version are kept off it.
        "result_version": result_version_for(task),
    }
    return Evaluation(
        metrics=metrics, logs=result.logs, public_logs=public_logs, audit=result.audit
    )

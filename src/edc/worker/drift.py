"""Drift watch: no result is timed on a slow host.

Every worker times the baseline submission (``<task>/baseline/``) of each track of its hardware
class and publishes its ranked score in Redis, keyed by track and class (``calibration.py``,
which also derives the worker's run-to-run spread from the recent timings). A worker whose figure
in a track is off the fleet's median there by more than the track's task's ``drift_tolerance`` (a
throttled GPU, a noisy neighbour) stops taking jobs, says so in its log and shows as drifting to
admins, until a later check finds it back in line.

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

from edc import db
from edc.config import Settings, get_settings
from edc.errors import EdcError, RunFailed
from edc.harness.evaluate import evaluate_submission
from edc.sandbox.backends import choose_sandbox
from edc.scheduler.connection import redis_connection, redis_errors
from edc.scheduler.fleet import drifting_key
from edc.services.tracks import TrackInfo, list_tracks
from edc.tasks.task import RequestCounts, Task, load_task
from edc.worker.calibration import MIN_RUNS, Calibrated, figures_key, fleet, record

log = logging.getLogger(__name__)

MEASURE_TIMEOUT_S = 600


def calibration_requests(task: Task) -> RequestCounts:
    """The task's own latency scenario (so the spread is that of a real score), a short rest."""
    counts = task.requests
    return RequestCounts(
        warmup=min(counts.warmup, 2), timed=counts.timed, throughput=2, repeats=counts.repeats
    )


def measure(settings: Settings, task_dir: Path | None = None) -> float:
    """The ranked score of the baseline of the task at ``task_dir`` (default: the configured
    one), on the public prompts, in this worker's sandbox."""
    task = load_task(settings, task_dir)
    if task.baseline_dir is None:
        raise EdcError(f"The task {task.name} has no baseline/ submission to time.")
    with tempfile.TemporaryDirectory(prefix="edc-drift-") as run_dir:
        result = evaluate_submission(
            settings=settings,
            # The organisers' own baseline: its task hidden as for any run, the rest unread.
            sandbox=choose_sandbox(settings, task.runtime, private_dirs=[task.root]),
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
    """The worker's side: when a check is due, time one watched track's baseline in a child
    process and judge it against the fleet's figures of that track on this class.

    The watched tracks are those of the worker's class with a baseline, read afresh at every
    check (a track added later is watched from its next check). A check times the track timed
    least, then longest ago: back to back while idle until every track has ``MIN_RUNS`` timings,
    then each once an interval. A drift in any track bars the worker from taking jobs.
    """

    def __init__(self, settings: Settings, worker_name: str, hardware_class: str) -> None:
        self.settings = settings
        self.worker_name = worker_name
        self.hardware_class = hardware_class
        # Due at once, but overdue (taken before a waiting job) only an interval later.
        self.next_check = time.monotonic()
        self.runs: dict[str, int] = {}  # timings per track
        self.last_run: dict[str, float] = {}
        self.drifting_tracks: set[str] = set()
        self._watched: list[TrackInfo] = []

    @property
    def drifting(self) -> bool:
        return bool(self.drifting_tracks)

    def due(self) -> bool:
        return time.monotonic() >= self.next_check

    def overdue(self) -> bool:
        return time.monotonic() >= self.next_check + self.settings.drift_interval_s

    def watched(self) -> list[TrackInfo]:
        """The tracks of this worker's class whose baselines it times; the last list known
        while the database does not answer."""
        try:
            with db.database_errors(), db.session_scope(self.settings) as session:
                tracks = list_tracks(session, self.settings)
        except EdcError as exc:
            log.warning("drift watch of %s keeps its tracks: %s", self.worker_name, exc.message)
            return self._watched
        watched = []
        for track in tracks:
            try:
                task = track.task()
            except EdcError as exc:
                log.warning("drift watch skips the track %s: %s", track.name, exc.message)
                continue
            if task.spec.hardware.kind == self.hardware_class and task.baseline_dir is not None:
                watched.append(track)
        self._watched = watched
        return watched

    def check(self) -> Verdict | None:
        tracks = self.watched()
        if not tracks:
            self.next_check = time.monotonic() + self.settings.drift_interval_s
            return None
        track = min(tracks, key=lambda t: (self.runs.get(t.name, 0), self.last_run.get(t.name, 0)))
        self.runs[track.name] = self.runs.get(track.name, 0) + 1
        self.last_run[track.name] = time.monotonic()
        settled = all(self.runs.get(t.name, 0) >= MIN_RUNS for t in tracks)
        # Back to back while idle until each spread can be measured, then each track once an
        # interval.
        pause = self.settings.drift_interval_s / len(tracks) if settled else 0.0
        self.next_check = time.monotonic() + pause
        try:
            mine = self._measure_in_child(track)
        except (EdcError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            log.warning(
                "drift check of %s in track %s failed; keeping the last verdict: %s",
                self.worker_name,
                track.name,
                exc,
            )
            return None
        with redis_errors():
            verdict = self._publish_and_judge(track, mine)
        return verdict

    def _measure_in_child(self, track: TrackInfo) -> float:
        done = subprocess.run(
            [sys.executable, "-m", "edc.worker.drift", str(track.task_dir)],
            capture_output=True,
            text=True,
            timeout=MEASURE_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise EdcError(f"the baseline run failed: {done.stderr.strip()[-500:]}")
        return float(json.loads(done.stdout.strip().splitlines()[-1])["score"])

    def _calibrated(self, track: str) -> Calibrated:
        return Calibrated(self.hardware_class, track)

    def _publish_and_judge(self, track: TrackInfo, mine: float) -> Verdict:
        connection = redis_connection(self.settings)
        of = self._calibrated(track.name)
        key = figures_key(self.settings, of)
        published = record(self.settings, self.worker_name, of, mine)
        fresh_after = published.at - 2 * self.settings.drift_interval_s
        others = []
        for name, figures in fleet(self.settings, of).items():
            if name == self.worker_name:
                continue
            if figures.at < fresh_after:
                connection.hdel(key, name)  # a worker gone for long: not the fleet any more
                continue
            others.append(figures.latest)
        tolerance = track.task().spec.hardware.drift_tolerance
        verdict = judge(mine, others, tolerance)
        was_drifting = self.drifting
        if verdict.drifting:
            self.drifting_tracks.add(track.name)
        else:
            self.drifting_tracks.discard(track.name)
        if self.drifting:
            connection.sadd(drifting_key(self.settings), self.worker_name)
        else:
            connection.srem(drifting_key(self.settings), self.worker_name)
        if self.drifting != was_drifting:
            log.log(
                logging.ERROR if self.drifting else logging.INFO,
                "worker %s %s: baseline score of track %s %.4g vs fleet median %s "
                "(tolerance %.0f%%)",
                self.worker_name,
                "drifts and stops taking jobs" if self.drifting else "is back in line",
                track.name,
                verdict.mine_ms,
                f"{verdict.fleet_median_ms:.3f}" if verdict.fleet_median_ms else "-",
                100 * tolerance,
            )
        return verdict

    def forget(self) -> None:
        """On the worker's way out: its figures and flag leave the fleet with it."""
        with redis_errors():
            connection = redis_connection(self.settings)
            for track in self.runs:
                key = figures_key(self.settings, self._calibrated(track))
                connection.hdel(key, self.worker_name)
            connection.srem(drifting_key(self.settings), self.worker_name)


def main() -> None:
    """The child process: time the baseline of the task named on the command line (default:
    the configured one) once and print {"score": ...}."""
    try:
        value = measure(get_settings(), Path(sys.argv[1]) if len(sys.argv) > 1 else None)
    except (EdcError, RunFailed) as exc:
        print(exc.message, file=sys.stderr)  # noqa: T201 - the parent reads it
        sys.exit(1)
    print(json.dumps({"score": value}))  # noqa: T201 - the parent reads it


if __name__ == "__main__":
    main()

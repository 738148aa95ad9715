"""Calibration: never while the worker is busy or a job waits, and a run-to-run spread that
widens every score's interval."""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path

import pytest
from rq import Queue

from edc.config import Settings
from edc.harness.metrics import PREDICTION_Z, widen_for_run_to_run
from edc.scheduler import fair_worker, producer
from edc.services.tracks import TrackInfo
from edc.worker import calibration, drift
from tests.worker import jobs

CPU_DEFAULT = calibration.Calibrated("cpu", "default")


class RecordingWatch(drift.DriftWatch):
    """The real watch's scheduling, with each measurement logged instead of run."""

    def __init__(self, settings: Settings, name: str, log: Path) -> None:
        super().__init__(settings, name, "cpu")
        self.log = log

    def _measure_in_child(self, track: TrackInfo) -> float:
        with self.log.open("a") as fh:
            fh.write(f"check start {time.monotonic()}\n")
        time.sleep(0.2)
        with self.log.open("a") as fh:
            fh.write(f"check end {time.monotonic()}\n")
        return 1.0


def events(log: Path) -> list[tuple[str, str, float]]:
    out = []
    for line in log.read_text().splitlines():
        who, what, at = line.split()
        out.append((who, what, float(at)))
    return out


def test_calibration_waits_for_the_queue_and_never_overlaps_a_job(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "events.log"
    worker = fair_worker.make_worker(sqlite_settings, name="calibrating", hardware_class="cpu")
    worker.watch = RecordingWatch(sqlite_settings, "calibrating", log)
    assert worker.watch.due() and not worker.watch.overdue()
    waiting = Queue(
        producer.queue_name_for(sqlite_settings, "cpu", 7), connection=worker.connection
    )
    for name in ("job1", "job2"):
        waiting.enqueue(jobs.timed_sleep, str(log), name, 0.5)
    worker.work(burst=True)
    seen = events(log)
    # The jobs that were waiting ran first; calibration came once the queue was empty.
    order = [who for who, what, _ in seen if what == "start"]
    assert order[:2] == ["job1", "job2"] and "check" in order
    spans = {}
    for who, what, at in seen:
        spans.setdefault(who, {})[what] = at
    for job in ("job1", "job2"):
        assert spans["check"]["start"] > spans[job]["end"] or (
            spans["check"]["end"] < spans[job]["start"]
        )


def test_a_long_overdue_check_goes_before_a_waiting_job(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "events.log"
    worker = fair_worker.make_worker(sqlite_settings, name="overdue", hardware_class="cpu")
    watch = RecordingWatch(sqlite_settings, "overdue", log)
    watch.next_check = time.monotonic() - 2 * sqlite_settings.drift_interval_s
    worker.watch = watch
    waiting = Queue(
        producer.queue_name_for(sqlite_settings, "cpu", 8), connection=worker.connection
    )
    waiting.enqueue(jobs.timed_sleep, str(log), "job", 0.1)
    worker.work(burst=True)
    assert [who for who, what, _ in events(log) if what == "start"][:2] == ["check", "job"]


def test_the_first_timings_run_back_to_back_then_once_an_interval(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    watch = RecordingWatch(sqlite_settings, "fresh", tmp_path / "log")
    for _ in range(calibration.MIN_RUNS - 1):
        watch.check()
        assert watch.due()
    watch.check()
    assert not watch.due()


def test_the_spread_is_the_workers_own_then_the_fleets_then_the_tasks(
    sqlite_settings: Settings,
) -> None:
    s = sqlite_settings
    assert calibration.run_to_run_spread(s, "w1", CPU_DEFAULT, prior=0.05).source == "task"
    figures = [1.0, 1.1, 0.9]
    for figure in figures:
        calibration.record(s, "w1", CPU_DEFAULT, figure)
    own = calibration.run_to_run_spread(s, "w1", CPU_DEFAULT, prior=0.05)
    assert own.source == "worker" and own.runs == 3
    cv = statistics.stdev(figures) / statistics.fmean(figures)
    assert own.value == own.measured == pytest.approx(cv)
    # A worker without its own timings yet borrows the fleet's.
    fleet = calibration.run_to_run_spread(s, "w2", CPU_DEFAULT, prior=0.05)
    assert fleet.source == "fleet" and fleet.value == pytest.approx(own.value)
    # Only the recent timings count; the task's prior is a floor under a measured spread.
    for _ in range(calibration.RECENT_RUNS):
        calibration.record(s, "w1", CPU_DEFAULT, 2.0)
    steady = calibration.run_to_run_spread(s, "w1", CPU_DEFAULT, prior=0.05)
    assert steady.measured == 0.0 and steady.value == 0.05


def test_without_redis_the_tasks_prior_still_gives_an_interval(tmp_path: Path) -> None:
    down = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0")
    spread = calibration.run_to_run_spread(down, "w", CPU_DEFAULT, prior=0.07)
    assert (spread.source, spread.value) == ("task", 0.07)


def test_widening_covers_another_run_of_the_same_code() -> None:
    # A narrow within-run interval is widened to a prediction interval for another run.
    low, high = widen_for_run_to_run(2.0, (1.98, 2.03), 0.05)
    assert low == pytest.approx(2.0 - PREDICTION_Z * 0.1)
    assert high == pytest.approx(2.0 + PREDICTION_Z * 0.1)
    # A within-run interval already wider stays as it is; a rate widens alike.
    assert widen_for_run_to_run(2.0, (1.0, 3.0), 0.01) == (1.0, 3.0)
    low, high = widen_for_run_to_run(1000.0, (990.0, 1010.0), 0.05)
    assert low < 900 and high > 1100
    # Simulated: runs with a 5% spread fall inside another run's interval ≥ 90% of the time.
    rng = __import__("random").Random(7)
    runs = [rng.gauss(1.0, 0.05) for _ in range(400)]
    inside = sum(
        lo <= b <= hi
        for a, b in itertools.pairwise(runs)
        for lo, hi in [widen_for_run_to_run(a, (a, a), 0.05)]
    )
    assert inside / (len(runs) - 1) >= 0.9

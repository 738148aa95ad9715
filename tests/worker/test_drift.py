"""The drift watch: judged against the fleet in real Redis, measured through the real sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rq import Queue

from edc import db
from edc.config import Settings
from edc.scheduler import connection as redis_link
from edc.scheduler import fair_worker, fleet, producer
from edc.services.tracks import TrackInfo, add_track
from edc.tasks.task import bundled_task_dir, load_task
from edc.worker import calibration, drift
from tests.support.platform import quick_task


def test_a_lone_worker_has_nothing_to_drift_from() -> None:
    assert not drift.judge(5.0, [], 0.25).drifting


def test_within_tolerance_is_in_line_and_beyond_is_drifting() -> None:
    assert not drift.judge(1.2, [1.0, 1.0], 0.25).drifting
    verdict = drift.judge(2.0, [1.0, 1.0, 1.1], 0.25)
    assert verdict.drifting
    assert verdict.fleet_median_ms == pytest.approx(1.05)


class _Measured(drift.DriftWatch):
    """The real watch, with the measurement's result given instead of run."""

    def __init__(self, settings: Settings, name: str, figure: float) -> None:
        super().__init__(settings, name, "cpu")
        self.figure = figure

    def _measure_in_child(self, track: TrackInfo) -> float:
        return self.figure


def test_a_slow_worker_is_flagged_and_stops_taking_jobs(sqlite_settings: Settings) -> None:
    for name, figure in (("fast-1", 1.0), ("fast-2", 1.1)):
        _Measured(sqlite_settings, name, figure).check()
    slow = _Measured(sqlite_settings, "slow", 3.0)
    verdict = slow.check()
    assert verdict is not None and verdict.drifting and slow.drifting

    worker = fair_worker.make_worker(sqlite_settings, name="slow")
    worker.watch = slow
    producer.enqueue_submission(sqlite_settings, 1)
    assert Queue.dequeue_any(worker._ordered_queues, None, connection=worker.connection) is None

    # Back in line at the next check (here long overdue, so it runs before the waiting job): it
    # takes jobs again and its flag is gone.
    slow.figure = 1.05
    slow.next_check = time.monotonic() - sqlite_settings.drift_interval_s
    popped = Queue.dequeue_any(worker._ordered_queues, None, connection=worker.connection)
    assert popped is not None and popped[0].args == (1,)
    connection = redis_link.redis_connection(sqlite_settings)
    assert connection.smembers(fleet.drifting_key(sqlite_settings)) == set()


def test_the_flag_shows_in_the_worker_list(sqlite_settings: Settings) -> None:
    _Measured(sqlite_settings, "a", 1.0).check()
    _Measured(sqlite_settings, "b", 1.0).check()
    slow = _Measured(sqlite_settings, "drifter", 9.0)
    slow.check()
    worker = fair_worker.make_worker(sqlite_settings, name="drifter")
    worker.register_birth()
    try:
        states = {s.name: s for s in fleet.worker_states(sqlite_settings)}
        assert states["drifter"].drifting
    finally:
        worker.register_death()


@pytest.mark.slow
def test_the_baseline_is_timed_in_the_sandbox(sqlite_settings: Settings, tmp_path: Path) -> None:
    task = load_task(sqlite_settings)
    assert task.baseline_dir is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDC_")}
    env.update(EDC_DATA_DIR=str(tmp_path), EDC_SANDBOX="bwrap")
    done = subprocess.run(
        [sys.executable, "-m", "edc.worker.drift", str(task.root)],  # the track's task
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["score"] > 0


def test_the_worker_list_names_class_devices_and_host(sqlite_settings: Settings) -> None:
    settings = sqlite_settings.model_copy(update={"gpus": "2,3"})
    worker = fair_worker.make_worker(settings, name="gpu-worker", hardware_class="h100")
    worker.register_birth()
    fleet.announce_worker(settings, "gpu-worker", hardware_class="h100", host="gpu-host-7")
    try:
        (state,) = [s for s in fleet.worker_states(settings) if s.name == "gpu-worker"]
        assert (state.hardware_class, state.gpus, state.host) == ("h100", ("2", "3"), "gpu-host-7")
        assert state.alive and not state.drifting
    finally:
        worker.register_death()
        fleet.retire_worker(settings, "gpu-worker")
    assert all(s.hardware_class is None for s in fleet.worker_states(settings))


class _PerTrack(drift.DriftWatch):
    """The real watch, each track's timing given instead of run (and which were timed kept)."""

    def __init__(self, settings: Settings, name: str, figures: dict[str, float]) -> None:
        super().__init__(settings, name, "cpu")
        self.figures = figures
        self.timed: list[str] = []

    def _measure_in_child(self, track: TrackInfo) -> float:
        self.timed.append(track.name)
        return self.figures[track.name]


def _track_with_baseline(folder: Path, hardware_class: str = "cpu") -> Path:
    root = quick_task(folder)
    (root / "baseline").symlink_to(bundled_task_dir() / "baseline")
    toml = root / "task.toml"
    toml.write_text(toml.read_text().replace('class = "cpu"', f'class = "{hardware_class}"'))
    return root


def test_each_track_of_the_class_is_timed_and_judged_apart(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    """Baselines are compared only with the same track's on the same class: a worker slow in one
    track drifts however the others go, and a track of another class is never timed."""
    with db.session_scope(sqlite_settings) as session:
        add_track(
            session, sqlite_settings, name="long", task_dir=_track_with_baseline(tmp_path / "l")
        )
        add_track(
            session,
            sqlite_settings,
            name="gpu",
            task_dir=_track_with_baseline(tmp_path / "g", "h100"),
        )
    # Two peers, in line with each other in both tracks (whose figures differ tenfold).
    for name in ("peer-1", "peer-2"):
        peer = _PerTrack(sqlite_settings, name, {"default": 1.0, "long": 10.0})
        while peer.due():
            peer.check()
        # Each track timed MIN_RUNS times back to back, alternating, then the interval's pause.
        assert sorted(peer.timed) == sorted(["default", "long"] * calibration.MIN_RUNS)
        assert peer.timed[:2] in (["default", "long"], ["long", "default"])
    key = calibration.figures_key(sqlite_settings, calibration.Calibrated("cpu", "long"))
    assert set(redis_link.redis_connection(sqlite_settings).hkeys(key)) == {b"peer-1", b"peer-2"}

    # In line in the default track, three times slower in "long": drifting.
    odd = _PerTrack(sqlite_settings, "odd", {"default": 1.02, "long": 30.0})
    while odd.due():
        odd.check()
    assert "gpu" not in odd.timed
    assert odd.drifting and odd.drifting_tracks == {"long"}
    connection = redis_link.redis_connection(sqlite_settings)
    assert connection.sismember(fleet.drifting_key(sqlite_settings), "odd")
    # Its spread in each track is its own figures', not the other track's.
    spread = calibration.run_to_run_spread(
        sqlite_settings, "odd", calibration.Calibrated("cpu", "default"), prior=0.0
    )
    assert spread.source == "worker" and spread.measured == 0.0

    # Back in line in "long": the flag is gone; on its way out its figures leave the fleet.
    odd.figures["long"] = 10.1
    while "long" in odd.drifting_tracks:
        odd.next_check = 0.0  # due now
        odd.check()
    assert not odd.drifting
    assert not connection.sismember(fleet.drifting_key(sqlite_settings), "odd")
    odd.forget()
    assert b"odd" not in connection.hkeys(key)

"""`edc up` for real: a subprocess on a free port, uploads over HTTP, polled to the end."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.platform import (
    REPO,
    RunningPlatform,
    kvcache_zip,
    start_platform,
    stop_platform,
    zip_of,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path)
    yield running
    if running.process.poll() is None:
        stop_platform(running)


def test_upload_runs_to_completion_with_verified_figures(platform: RunningPlatform) -> None:
    response = platform.upload("kvcache.zip", kvcache_zip())
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] == "queued"

    final = platform.wait_final(created["id"])
    assert final["status"] == "completed", final
    metrics = final["result_metrics"]
    assert metrics["correct"] is True
    # Every token is verified: warm-up + timed + throughput requests × tokens.
    assert metrics["tokens_checked"] == (1 + 2 + 2) * 16
    assert metrics["exact_match_rate"] == 1.0
    tpot = metrics["latency"]["tpot_ms"]
    assert 0 < tpot["p50"] <= tpot["p99"]
    ranked = metrics["latency"]["e2e_per_token_ms"]
    assert metrics["score_metric"] == "latency.e2e_per_token_ms.p50"
    assert min(metrics["score_repeats"]) <= metrics["score"] <= max(metrics["score_repeats"])
    assert 0 < ranked["p50"] <= ranked["p99"]
    assert metrics["plausibility"]["implausible"] is False
    assert metrics["throughput"]["output_tokens_per_s"] > 0
    assert final["started_at"] and final["finished_at"]
    assert final["worker_id"]
    # What produced the figures, recorded with them.
    made_by = metrics["provenance"]
    assert made_by["worker"] == final["worker_id"]
    assert made_by["host"] == socket.gethostname()
    assert made_by["hardware_class"] == "cpu"
    assert made_by["device"] and made_by["driver"].startswith("linux ")
    assert made_by["sandbox"].startswith("bubblewrap")
    assert made_by["task"]["name"] == "tiny-stdlib"
    assert len(made_by["task"]["model_sha256"]) == 64
    assert made_by["harness"]["protocol"] == 1
    # Nothing of the run is left on disk.
    assert list((platform.data_dir / "runs").iterdir()) == []


def test_crash_ends_failed_with_reason_and_sentence(platform: RunningPlatform) -> None:
    code = "import sys\nprint('about to fail', file=sys.stderr)\nsys.exit(3)\n"
    response = platform.upload("bad.zip", zip_of({"pkg/submission.py": code}))
    assert response.status_code == 201, response.text
    final = platform.wait_final(response.json()["id"])
    assert final["status"] == "failed"
    assert final["failure_reason"] == "crashed", final
    assert final["failure_message"].startswith("On the public prompts:")
    assert final["result_metrics"] is None


def test_sigterm_stops_every_child(tmp_path: Path) -> None:
    running = start_platform(tmp_path, workers=2)
    port = int(running.url.rsplit(":", 1)[1])
    children = psutil.Process(running.process.pid).children(recursive=True)
    # The portal and two workers, plus the embedded Redis server, which runs daemonised.
    assert len(children) >= 3, children
    data_dir = str((tmp_path / "data").resolve())
    children += [
        p
        for p in psutil.process_iter(["name", "cwd"])
        if p.info["name"] == "redis-server" and p.info["cwd"] == data_dir
    ]
    assert len(children) >= 4, children
    output = stop_platform(running)
    assert running.process.returncode == 0, output
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the portal still listens after stop"
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert alive == [], f"still running after stop: {alive}"


def test_first_start_submits_the_example_once(tmp_path: Path) -> None:
    example = ("--example", str(REPO / "examples" / "kvcache"))
    platform = start_platform(tmp_path, up_args=example)
    try:
        # The example belongs to the "example" account; everyone sees it on the leaderboard once
        # it has completed, as a baseline.
        deadline = time.monotonic() + 120
        baselines: list[dict[str, Any]] = []
        while not baselines and time.monotonic() < deadline:
            baselines = platform.client.get("/api/v1/leaderboard").json()["baselines"]
            time.sleep(0.5)
        assert [b["submission_id"] for b in baselines] == [1]
        assert baselines[0]["score"] > 0
        page = platform.client.get("/")
        assert page.status_code == 200
    finally:
        stop_platform(platform)
    # A restart on the same data finds submissions and submits nothing more.
    again = start_platform(tmp_path, up_args=example, user="tester2")
    try:
        rows = again.client.get("/api/v1/leaderboard").json()["baselines"]
        assert [r["submission_id"] for r in rows] == [1]
        with sqlite3.connect(again.data_dir / "edc.sqlite3") as connection:
            assert connection.execute("SELECT count(*) FROM submissions").fetchone() == (1,)
    finally:
        stop_platform(again)

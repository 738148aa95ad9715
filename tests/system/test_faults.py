"""Fault injection with real processes and services: nothing is lost, nothing runs twice."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.support.own_postgres import OwnPostgres
from tests.support.platform import (
    RunningPlatform,
    create_user,
    kvcache_zip,
    start_platform,
    stop_platform,
)
from tests.support.redis_claim import RedisClaim

pytestmark = pytest.mark.slow

# Recovery settles in seconds instead of the production minute; one evaluation stage only.
FAST = (
    ("EDC_PUBLIC_CHECK", "false"),
    ("EDC_HEARTBEAT_INTERVAL_S", "0.5"),
    ("EDC_HEARTBEAT_TIMEOUT_S", "3"),
    ("EDC_RECONCILE_INTERVAL_S", "1"),
)


def sleeper(seconds: float) -> bytes:
    """A correct submission that spends ``seconds`` loading, so it can be caught mid-run."""
    return kvcache_zip(load_delay_s=seconds)


def wait_status(
    platform: RunningPlatform, submission_id: int, status: str, timeout_s: float
) -> dict[str, Any]:
    return wait_row(platform, submission_id, timeout_s, status, lambda row: row["status"] == status)


def wait_attempt(
    platform: RunningPlatform, submission_id: int, attempt: int, timeout_s: float
) -> dict[str, Any]:
    return wait_row(
        platform, submission_id, timeout_s, f"attempt {attempt}", lambda r: r["attempt"] >= attempt
    )


def wait_row(
    platform: RunningPlatform,
    submission_id: int,
    timeout_s: float,
    what: str,
    reached: Callable[[dict[str, Any]], bool],
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = platform.client.get(f"/api/v1/submissions/{submission_id}").json()
        if reached(body):
            return body
        time.sleep(0.05)
    raise AssertionError(f"submission {submission_id} never reached {what}: {body}")


def worker_process(platform: RunningPlatform, worker_id: str) -> psutil.Process:
    # `edc up` names its workers "<host>-<n>-<deployment>-<random>", started with --name-suffix n.
    slot = worker_id.rsplit("-", 3)[1]
    for child in psutil.Process(platform.process.pid).children():
        argv = child.cmdline()
        if "worker" in argv and argv[argv.index("--name-suffix") + 1] == slot:
            return child
    raise AssertionError(f"no worker process for {worker_id}")


@pytest.mark.timing  # recovery timed against its documented bound
def test_kill_9_of_a_worker_mid_run_completes_once_elsewhere(
    tmp_path: Path, redis_url: str
) -> None:
    # The defaults' proportions (beat 5 s, timeout 30 s, reconcile 15 s), scaled down 7.5 times.
    timeout_s, interval_s = 4.0, 2.0
    proportions = (
        ("EDC_PUBLIC_CHECK", "false"),
        ("EDC_HEARTBEAT_INTERVAL_S", "0.67"),
        ("EDC_HEARTBEAT_TIMEOUT_S", str(timeout_s)),
        ("EDC_RECONCILE_INTERVAL_S", str(interval_s)),
    )
    platform = start_platform(tmp_path, ("EDC_REDIS_URL", redis_url), *proportions, workers=2)
    try:
        submission_id = platform.upload("s.zip", sleeper(6)).json()["id"]
        running = wait_status(platform, submission_id, "processing", 30)
        victim = worker_process(platform, running["worker_id"])
        horses = victim.children(recursive=True)
        assert horses, "the worker should be running a work-horse and its sandbox"
        killed_at = time.monotonic()
        victim.kill()

        # Back in the queue within the documented bound, whichever worker held the reconciler's
        # lock (the slack covers a beat interval and this poll).
        while platform.client.get(f"/api/v1/submissions/{submission_id}").json()["attempt"] < 2:
            assert time.monotonic() - killed_at < timeout_s + interval_s + 1.5, "too slow"
            time.sleep(0.1)
        requeued_s = time.monotonic() - killed_at
        final = platform.wait_final(submission_id, timeout_s=60)
        recovery_s = time.monotonic() - killed_at
        assert final["status"] == "completed", final
        assert final["attempt"] == 2
        assert final["worker_id"] != running["worker_id"]
        # The dead worker's work-horse and sandbox died with it: no second run went on unseen.
        _gone, alive = psutil.wait_procs(horses, timeout=5)
        assert alive == []
        print(f"back in the queue {requeued_s:.1f} s after the kill, done in {recovery_s:.1f} s")
    finally:
        stop_platform(platform)


def test_redis_flushed_with_20_queued_all_complete(
    tmp_path: Path, redis_url: str, redis_claim: RedisClaim
) -> None:
    platform = start_platform(tmp_path, ("EDC_REDIS_URL", redis_url), *FAST, workers=2)
    try:
        ids = [platform.upload(f"s{i}.zip", sleeper(0)).json()["id"] for i in range(20)]
        redis_claim.flush()  # everything but the test run's claim on the index
        flushed_at = time.monotonic()
        finals = [platform.wait_final(i, timeout_s=120) for i in ids]
        assert [f["status"] for f in finals] == ["completed"] * 20
        print(f"20 submissions done {time.monotonic() - flushed_at:.1f} s after the flush")
    finally:
        stop_platform(platform)


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    server.start()
    yield server
    server.remove()


def test_postgres_restart_mid_run_keeps_the_result(
    tmp_path: Path, redis_url: str, own_postgres: OwnPostgres
) -> None:
    platform = start_platform(
        tmp_path,
        ("EDC_REDIS_URL", redis_url),
        ("EDC_DATABASE_URL", own_postgres.url),
        *FAST,
        workers=1,
    )
    try:
        submission_id = platform.upload("s.zip", sleeper(4)).json()["id"]
        wait_status(platform, submission_id, "processing", 30)
        own_postgres.stop()
        down = platform.client.get(f"/api/v1/submissions/{submission_id}")
        assert down.status_code == 503
        assert "database" in down.json()["detail"].lower()
        time.sleep(5)  # the run ends while the database is down
        own_postgres.start()

        final = platform.wait_final(submission_id, timeout_s=60)
        assert final["status"] == "completed", final
        assert final["attempt"] == 1
        assert final["result_metrics"]["correct"] is True
    finally:
        stop_platform(platform)


def _portal(platform: RunningPlatform) -> psutil.Process:
    for child in psutil.Process(platform.process.pid).children(recursive=True):
        if "portal" in child.cmdline():
            return child
    raise AssertionError("no portal process")


def test_portal_killed_mid_upload_leaves_no_row_without_file_or_file_without_row(
    tmp_path: Path, redis_url: str
) -> None:
    platform = start_platform(
        tmp_path, ("EDC_REDIS_URL", redis_url), ("EDC_STALE_UPLOAD_S", "1"), workers=0
    )
    try:
        done = platform.upload("done.zip", sleeper(0)).json()["id"]
        portal = _portal(platform)
        payload = sleeper(0) + b"\0" * (8 * 1024 * 1024)  # junk after the zip: never finished
        boundary = "killtestboundary"

        def slow_body() -> Iterator[bytes]:
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                'filename="cut.zip"\r\nContent-Type: application/zip\r\n\r\n'
            ).encode()
            for offset in range(0, len(payload), 256 * 1024):
                yield payload[offset : offset + 256 * 1024]
                time.sleep(0.05)
                if offset == 4 * 256 * 1024:
                    portal.kill()  # mid-body: the portal dies with a partial file on disk

        with pytest.raises(httpx.HTTPError):
            httpx.post(
                f"{platform.url}/api/v1/submissions",
                content=slow_body(),
                headers={
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Authorization": f"Bearer {platform.token}",
                },
                timeout=30,
            )
        uploads = platform.data_dir / "uploads"
        assert any(p.name.endswith(".part") for p in uploads.iterdir()), "no partial file to clean"
        # `edc up` restarts the portal; a starting portal removes debris older than 1 s.
        time.sleep(1.5)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if (
                    platform.client.get("/readyz").status_code == 200
                    and _portal(platform) != portal
                ):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        rows = platform.client.get("/api/v1/submissions").json()["items"]
        assert [r["id"] for r in rows] == [done]
        files = sorted(p.name for p in uploads.iterdir())
        assert len(files) == 1 and files[0].endswith(".zip"), files
        assert rows[0]["sha256"]
    finally:
        stop_platform(platform)


@pytest.mark.timing  # the hand-back timed against the run it cuts short
def test_sigterm_to_a_busy_worker_hands_its_submission_back(tmp_path: Path, redis_url: str) -> None:
    # Heartbeats judged only after a minute: the hand-back, not the reconciler, must requeue it.
    platform = start_platform(
        tmp_path,
        ("EDC_REDIS_URL", redis_url),
        ("EDC_PUBLIC_CHECK", "false"),
        ("EDC_HEARTBEAT_TIMEOUT_S", "60"),
        workers=1,
    )
    try:
        submission_id = platform.upload("s.zip", sleeper(10)).json()["id"]
        running = wait_status(platform, submission_id, "processing", 30)
        worker = worker_process(platform, running["worker_id"])
        sandboxes = [p for p in worker.children(recursive=True) if p.name() == "bwrap"]
        stopped_at = time.monotonic()
        worker.terminate()
        handed_back = wait_attempt(platform, submission_id, 2, timeout_s=20)
        handed_back_s = time.monotonic() - stopped_at
        assert handed_back["status"] in {"queued", "processing"}, handed_back
        # Sooner than the 10 s load would end (with room for a loaded machine): the run was
        # given up, not waited for.
        assert handed_back_s < 7
        worker.wait(timeout=20)
        _gone, alive = psutil.wait_procs(sandboxes, timeout=5)
        assert alive == [], "the sandbox outlived the worker's shutdown"

        # `edc up` starts a fresh worker, which takes the handed-back attempt.
        final = platform.wait_final(submission_id, timeout_s=90)
        assert final["status"] == "completed", final
        assert final["attempt"] == 2
        print(f"worker stopped and handed back its submission in {handed_back_s:.1f} s")
    finally:
        stop_platform(platform)


def test_cancelling_a_running_submission_stops_its_sandbox(tmp_path: Path, redis_url: str) -> None:
    platform = start_platform(tmp_path, ("EDC_REDIS_URL", redis_url), *FAST, workers=1)
    try:
        env = {"EDC_DATA_DIR": str(platform.data_dir), "PATH": os.environ["PATH"]}
        boss = create_user(env, "boss", admin=True)
        submission_id = platform.upload("slow.zip", sleeper(30)).json()["id"]
        running = wait_status(platform, submission_id, "processing", 30)
        worker = worker_process(platform, running["worker_id"])
        time.sleep(1)  # let the sandbox come up
        sandboxes = [p for p in worker.children(recursive=True) if p.name() == "bwrap"]
        assert sandboxes

        cancelled = platform.client.post(
            f"/api/v1/admin/submissions/{submission_id}/cancel",
            headers={"Authorization": f"Bearer {boss}"},
        )
        assert cancelled.status_code == 200, cancelled.text
        _gone, alive = psutil.wait_procs(sandboxes, timeout=10)
        assert alive == [], "the cancelled run's sandbox is still running"
        assert platform.client.get(f"/api/v1/submissions/{submission_id}").json()["status"] == (
            "cancelled"
        )
        # The worker is free again and the next submission runs.
        follow_up = platform.upload("next.zip", sleeper(0)).json()["id"]
        assert platform.wait_final(follow_up, timeout_s=90)["status"] == "completed"
    finally:
        stop_platform(platform)

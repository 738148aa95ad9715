"""`edc portal --processes 2`: two processes serve one port, their request counts add up in every
scrape whichever process answers it, uploads go through, and they end with their supervisor, even
when it is killed outright."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from edc.config import Settings
from edc.observability.prometheus import MULTIPROCESS_ENV
from tests.support.competition import bearer, make_user, zip_of
from tests.support.databases import postgres_only
from tests.support.platform import answers, free_port, portal_process

pytestmark = [pytest.mark.slow, postgres_only]

HEALTH_COUNT = re.compile(
    r'^edc_http_requests_total\{method="GET",route="/healthz",status="200"\} (\S+)$', re.M
)


def portal_env(settings: Settings, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDC_")}
    env.update(
        EDC_DATA_DIR=str(settings.data_dir),
        EDC_DATABASE_URL=settings.resolved_database_url,
        EDC_REDIS_URL=settings.redis_url or "",
        EDC_ENV="dev",
        EDC_PORTAL_PROCESSES="2",
    )
    env.update(more)
    return env


@contextmanager
def two_processes(settings: Settings) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    log = settings.data_dir / "portal.log"

    def ready(process: subprocess.Popen[bytes]) -> bool:
        # Both started, not just spawned: one still starting when its supervisor is killed ends
        # only once its start-up is done, which on a loaded machine is seconds later.
        started = log.read_text().count("Application startup complete")
        return len(serving(process)) == 2 and started >= 2

    with portal_process(portal_env(settings), log, ready=ready) as (url, supervisor):
        children = serving(supervisor)
        try:
            yield url, supervisor
        finally:
            for child in children:  # however the test went, none is left serving
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()


def serving(supervisor: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The processes serving the port: the supervisor's spawned children."""
    try:
        children = psutil.Process(supervisor.pid).children()
    except psutil.NoSuchProcess:
        return []
    return [c for c in children if "spawn_main" in " ".join(c.cmdline())]


def ended(process: psutil.Process) -> bool:
    # A child whose supervisor was killed is reaped by whoever adopts it, if anyone: a zombie
    # serves nothing.
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def health_count(url: str) -> float:
    scrape = httpx.get(f"{url}/metrics", timeout=10)
    assert scrape.status_code == 200
    return float(HEALTH_COUNT.findall(scrape.text)[0])


def test_two_processes_count_together_and_take_uploads(settings: Settings) -> None:
    _, token = make_user(settings, "alice")
    with two_processes(settings) as (url, supervisor):
        children = serving(supervisor)
        folder = Path(children[0].environ()[MULTIPROCESS_ENV])
        # A connection per request, until each process has answered some (each keeps its counts
        # in a file of its own).
        sent = 0
        while len(list(folder.glob("counter_*.db"))) < 2:
            assert sent < 500, "one process answered every request"
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            sent += 1
        # A request is counted just after its answer: wait until the count holds still, then
        # every scrape gives it, whichever process answers.
        deadline = time.monotonic() + 10
        while (count := health_count(url)) < sent or health_count(url) != count:
            assert time.monotonic() < deadline, "the counts never settled"
            time.sleep(0.2)
        assert [health_count(url) for _ in range(6)] == [count] * 6
        files = {"file": ("s.zip", zip_of(), "application/zip")}
        upload = httpx.post(
            f"{url}/api/v1/submissions", files=files, headers=bearer(token), timeout=30
        )
        assert upload.status_code == 201, upload.text
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(timeout=30)
        assert all(ended(c) for c in children)
        assert not folder.exists()  # the run's metrics folder is removed with it


def test_the_processes_end_when_their_supervisor_is_killed(settings: Settings) -> None:
    with two_processes(settings) as (url, supervisor):
        children = serving(supervisor)
        folder = Path(children[0].environ()[MULTIPROCESS_ENV])
        supervisor.kill()
        supervisor.wait(timeout=10)
        deadline = time.monotonic() + 15
        while not all(ended(c) for c in children):
            assert time.monotonic() < deadline, "a portal process went on after its supervisor"
            time.sleep(0.1)
        assert not answers(url)
    # The folder a killed supervisor left is removed by the next start.
    assert folder.is_dir()
    with two_processes(settings):
        assert not folder.exists()


def test_a_process_that_cannot_start_stops_them_all_with_status_3(settings: Settings) -> None:
    not_a_folder = settings.data_dir.parent / "a-file"
    not_a_folder.write_text("")
    env = portal_env(settings, EDC_DATA_DIR=str(not_a_folder))
    done = subprocess.run(
        [sys.executable, "-m", "edc", "portal", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "failed to start" in done.stdout + done.stderr

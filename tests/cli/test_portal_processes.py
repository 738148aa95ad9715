"""`edc portal --processes 2`: two processes serve one port, their request counts add up in every
scrape whichever process answers it, uploads go through, and they end with their supervisor, even
when it is killed outright."""

from __future__ import annotations

import os
import re
import signal
import subprocess
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
from tests.support.platform import answers, portal_process

pytestmark = [pytest.mark.slow, postgres_only]

HEALTH_COUNT = re.compile(
    r'^edc_http_requests_total\{method="GET",route="/healthz",status="200"\} (\S+)$', re.M
)


@contextmanager
def two_processes(settings: Settings) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDC_")}
    env.update(
        EDC_DATA_DIR=str(settings.data_dir),
        EDC_DATABASE_URL=settings.resolved_database_url,
        EDC_REDIS_URL=settings.redis_url or "",
        EDC_ENV="dev",
        EDC_PORTAL_PROCESSES="2",
    )
    log = settings.data_dir / "portal.log"
    with portal_process(env, log, ready=lambda process: len(serving(process)) == 2) as started:
        yield started


def serving(supervisor: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The processes serving the port: the supervisor's spawned children."""
    try:
        children = psutil.Process(supervisor.pid).children()
    except psutil.NoSuchProcess:
        return []
    return [c for c in children if "spawn_main" in " ".join(c.cmdline())]


def metrics_folder(process: psutil.Process) -> Path:
    return Path(process.environ()[MULTIPROCESS_ENV])


def test_two_processes_count_together_and_take_uploads(settings: Settings) -> None:
    _, token = make_user(settings, "alice")
    with two_processes(settings) as (url, supervisor):
        children = serving(supervisor)
        folder = metrics_folder(children[0])
        assert folder.is_dir()
        for _ in range(30):  # a connection each, so both processes take some
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        counts = set()
        for _ in range(4):
            scrape = httpx.get(f"{url}/metrics", timeout=10)
            assert scrape.status_code == 200
            counts.add(float(HEALTH_COUNT.findall(scrape.text)[0]))
        # Every scrape counts the 30 (and the readiness probes before them), whoever answers it.
        assert len(counts) == 1 and counts.pop() >= 30
        files = {"file": ("s.zip", zip_of(), "application/zip")}
        upload = httpx.post(
            f"{url}/api/v1/submissions", files=files, headers=bearer(token), timeout=30
        )
        assert upload.status_code == 201, upload.text
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(timeout=30)
        assert not any(c.is_running() for c in children)
        assert not folder.exists()  # the run's metrics folder is removed with it


def test_the_processes_end_when_their_supervisor_is_killed(settings: Settings) -> None:
    with two_processes(settings) as (url, supervisor):
        children = serving(supervisor)
        supervisor.kill()
        supervisor.wait(timeout=10)
        _, alive = psutil.wait_procs(children, timeout=15)
        assert alive == [], "a portal process went on serving after its supervisor was killed"
        assert not answers(url)

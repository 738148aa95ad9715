"""`edc portal` believes X-Forwarded-For only from the proxies EDC_TRUSTED_PROXIES names: without
it a client cannot dodge the log-in limit (or aim it at someone else) by naming an address."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from edc import db
from edc.config import Settings
from tests.support.competition import make_user
from tests.support.platform import free_port

pytestmark = pytest.mark.slow


@contextmanager
def portal_process(data_dir: Path, trusted: str | None) -> Iterator[str]:
    settings = Settings(data_dir=data_dir, env="dev")
    db.upgrade(settings)
    make_user(settings, "alice")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDC_")}
    env.update(EDC_DATA_DIR=str(data_dir), EDC_ENV="dev", EDC_LOGIN_MAX_FAILURES="2")
    if trusted is not None:
        env["EDC_TRUSTED_PROXIES"] = trusted
    log = data_dir / "portal.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "edc", "portal", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the portal did not start"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def guess(url: str, forwarded_for: str) -> int:
    response = httpx.post(
        f"{url}/api/v1/tokens",
        json={"name": "alice", "password": "wrong"},
        headers={"X-Forwarded-For": forwarded_for},
        timeout=30,
    )
    return response.status_code


def test_forwarded_addresses_are_ignored_unless_the_proxy_is_trusted(tmp_path: Path) -> None:
    with portal_process(tmp_path / "untrusted", trusted=None) as url:
        answers = [guess(url, f"198.51.100.{i}") for i in range(4)]
    # Each guess named a new address; all counted against the one real address.
    assert answers == [401, 401, 429, 429]


def test_a_trusted_proxys_forwarded_address_is_the_client(tmp_path: Path) -> None:
    with portal_process(tmp_path / "trusted", trusted="127.0.0.1") as url:
        assert [guess(url, "198.51.100.7") for _ in range(3)] == [401, 401, 429]
        # Another client behind the same proxy is not locked out by the first one's guesses.
        assert guess(url, "198.51.100.8") == 401

"""`edc portal` believes X-Forwarded-For only from the proxies EDC_TRUSTED_PROXIES names: without
it a client cannot dodge the log-in limit (or aim it at someone else) by naming an address."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from edc import db
from edc.config import Settings
from tests.support.competition import make_user
from tests.support.platform import portal_process

pytestmark = pytest.mark.slow


@contextmanager
def portal_on(data_dir: Path, trusted: str | None) -> Iterator[str]:
    settings = Settings(data_dir=data_dir, env="dev")
    db.upgrade(settings)
    make_user(settings, "alice")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDC_")}
    env.update(EDC_DATA_DIR=str(data_dir), EDC_ENV="dev", EDC_LOGIN_MAX_FAILURES="2")
    if trusted is not None:
        env["EDC_TRUSTED_PROXIES"] = trusted
    with portal_process(env, data_dir / "portal.log") as (url, _):
        yield url


def guess(url: str, forwarded_for: str) -> int:
    response = httpx.post(
        f"{url}/api/v1/tokens",
        json={"name": "alice", "password": "wrong"},
        headers={"X-Forwarded-For": forwarded_for},
        timeout=30,
    )
    return response.status_code


def test_forwarded_addresses_are_ignored_unless_the_proxy_is_trusted(tmp_path: Path) -> None:
    with portal_on(tmp_path / "untrusted", trusted=None) as url:
        answers = [guess(url, f"198.51.100.{i}") for i in range(4)]
    # Each guess named a new address; all counted against the one real address.
    assert answers == [401, 401, 429, 429]


def test_a_trusted_proxys_forwarded_address_is_the_client(tmp_path: Path) -> None:
    with portal_on(tmp_path / "trusted", trusted="127.0.0.1") as url:
        assert [guess(url, "198.51.100.7") for _ in range(3)] == [401, 401, 429]
        # Another client behind the same proxy is not locked out by the first one's guesses.
        assert guess(url, "198.51.100.8") == 401

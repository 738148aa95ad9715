"""Shared fixtures: real PostgreSQL, real Redis, real SQLite, cleaned per test; and the portal
with its users and on a live server (tests/support/live_server.py).

Several test runs may share this machine's servers at once, so each run takes its own PostgreSQL
database (created here, dropped at the end) and its own Redis database index (claimed with a key).
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from edc import db
from edc.config import Settings, get_settings
from edc.models import Base
from edc.services import accounts
from tests.support.redis_claim import RedisClaim

# Under pytest-xdist a worker process starts with COLUMNS=80 in its environment, and rich fixes a
# console's width from COLUMNS when the console is made (the CLI's, at import): the COLUMNS a test
# gives its command would be ignored, and long lines wrapped where the test reads them whole.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

# Fixtures more than one folder uses, kept in tests/support so no folder imports another's conftest.
pytest_plugins = ["tests.support.live_server", "tests.support.timing_lock"]

PG_ADMIN_DSN = os.environ.get("EDC_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_HOST_URL = os.environ.get("EDC_TEST_REDIS", "redis://127.0.0.1:6379")


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    name = f"edc_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{base}/{name}"
    db.upgrade(Settings(database_url=url))
    yield url
    db.dispose_engines()
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_claim() -> Iterator[RedisClaim]:
    """This test process's own Redis database index."""
    claim = RedisClaim.take(REDIS_HOST_URL)
    if claim is None:
        pytest.fail("every Redis database index 1..15 is claimed by another test run")
    yield claim
    claim.release()


@pytest.fixture
def redis_url(redis_claim: RedisClaim) -> str:
    """The process's Redis database, flushed before each test (and claimed again: a test may
    have flushed it, claim key and all)."""
    redis_claim.flush()
    return redis_claim.url


def _clean_tables(settings: Settings) -> None:
    accounts.forget_blocked()  # what the process learnt of blocked log-ins came from these rows
    with db.session_scope(settings) as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(text(f"DELETE FROM {table.name}"))


@pytest.fixture(params=["sqlite", "postgres"])
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, db_kind: str
) -> Iterator[Settings]:
    """Settings on a fresh data dir, for SQLite and for PostgreSQL (the test runs once on each)."""
    database_url = None
    if db_kind == "postgres":
        database_url = request.getfixturevalue("pg_database_url")
    s = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        redis_url=redis_url,
        env="dev",
    )
    db.upgrade(s)
    _clean_tables(s)
    yield s
    _clean_tables(s)


@pytest.fixture
def sqlite_settings(tmp_path: Path, redis_url: str) -> Settings:
    """Settings on SQLite only, for tests where the database kind does not matter."""
    s = Settings(data_dir=tmp_path / "data", redis_url=redis_url, env="dev")
    db.upgrade(s)
    return s


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    """The settings a test's RQ work-horses run with (a test module may narrow them)."""
    return settings


@pytest.fixture
def worker_environment(
    worker_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """What a worker process reads its settings from (the work-horse runs the job); and RQ's
    signal handlers, which a worker installs in this process, put back afterwards."""
    s = worker_settings
    monkeypatch.setenv("EDC_DATA_DIR", str(s.data_dir))
    monkeypatch.setenv("EDC_REDIS_URL", str(s.redis_url))
    monkeypatch.setenv("EDC_SANDBOX", "bwrap")
    monkeypatch.setenv("EDC_ENV", "dev")
    monkeypatch.setenv("EDC_MAX_ATTEMPTS", str(s.max_attempts))
    if s.task_dir is not None:
        monkeypatch.setenv("EDC_TASK_DIR", str(s.task_dir))
    if s.database_url:
        monkeypatch.setenv("EDC_DATABASE_URL", s.database_url)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


@pytest.fixture(scope="session")
def torch_environment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A decoder runtime environment holding torch (and numpy), built once per session."""
    from tests.support.runtime import build_torch_environment

    return build_torch_environment(tmp_path_factory.mktemp("runtime") / "torch")

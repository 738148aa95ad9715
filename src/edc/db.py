"""Engines, sessions and migrations, for SQLite and PostgreSQL alike."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, Pool, create_engine, event, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from edc.config import Settings
from edc.errors import ServiceUnavailable

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# One engine per (URL, process): a forked RQ work-horse must not reuse its parent's connections.
_engines: dict[tuple[str, int], Engine] = {}
# Each engine's session class, made once: a sessionmaker per unit of work made a new Session
# subclass each time, whose event bookkeeping cost more than a query.
_session_makers: dict[Engine, sessionmaker[Session]] = {}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the portal read while a worker writes; busy_timeout waits instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str, *, poolclass: type[Pool] | None = None) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 10},
            **({"poolclass": poolclass} if poolclass else {}),
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if poolclass is not None:
        return create_engine(url, poolclass=poolclass)
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def get_engine(settings: Settings) -> Engine:
    url = settings.resolved_database_url
    key = (url, os.getpid())
    engine = _engines.get(key)
    if engine is None:
        if url.startswith("sqlite"):
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = _engines[key] = make_engine(url)
    return engine


def session_factory(settings: Settings) -> sessionmaker[Session]:
    engine = get_engine(settings)
    maker = _session_makers.get(engine)
    if maker is None:
        maker = _session_makers[engine] = sessionmaker(engine, expire_on_commit=False)
    return maker


@contextmanager
def session_scope(settings: Settings) -> Iterator[Session]:
    """A unit of work: commits on success, rolls back on any exception."""
    session = session_factory(settings)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def ping(settings: Settings) -> None:
    """Raise the driver's error when the database does not answer."""
    with get_engine(settings).connect() as connection:
        connection.execute(text("SELECT 1"))


T = TypeVar("T")


def retry_while_unreachable(
    settings: Settings, work: Callable[[], T], *, what: str, give_up_after_s: float | None = None
) -> T:
    """Run ``work`` again (with backoff) while the database does not answer.

    For the worker's writes: a result measured over minutes must survive a database restart.
    Errors that are not about the connection are raised at once.
    """
    limit = settings.db_retry_s if give_up_after_s is None else give_up_after_s
    deadline = time.monotonic() + limit
    delay = 0.2
    while True:
        try:
            return work()
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("database unreachable while %s (%s); retrying in %.1f s", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's ini interpolation treats '%' specially.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to run on every start."""
    if settings.resolved_database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings.resolved_database_url), revision)


def dispose_engines() -> None:
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()
    _session_makers.clear()


@contextmanager
def database_errors() -> Iterator[None]:
    """Translate a database that does not answer into ServiceUnavailable where it enters."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        # The driver's text can name hosts and users: it goes to the log, not to the user.
        log.warning("database error: %s", exc)
        raise ServiceUnavailable("The database is unreachable; try again shortly.") from exc

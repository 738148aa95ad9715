"""Alembic environment: the URL comes from :func:`edc.db.alembic_config`, never from a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import pool

from edc.db import make_engine
from edc.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    # A NullPool from the start: swapping the pool after creation skipped the dialect's
    # first-connect initialisation, which SQLite batch migrations need (server version).
    engine = make_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        # render_as_batch: SQLite can only alter tables by copying them.
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

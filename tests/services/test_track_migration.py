"""Migration 0007 on a database in use: queued, running and finished rows all join the default
track, keep their state, and rank on its board; the downgrade gives the old schema back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from edc import db
from edc.config import Settings
from edc.services import leaderboard
from edc.services.tracks import list_tracks
from tests.conftest import PG_ADMIN_DSN

ROWS = [
    ("queued", None, None),
    ("processing", "w1", None),
    ("completed", "w1", '{"correct": true, "score": 2.5, "score_ci": [2.4, 2.6]}'),
]


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'old.db'}")
        return
    name = f"edc_migration_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    yield Settings(data_dir=tmp_path, database_url=f"{base}/{name}")
    db.dispose_engines()
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_rows_of_a_running_platform_join_the_default_track(empty_database: Settings) -> None:
    s = empty_database
    db.upgrade(s, "0006")
    engine = create_engine(s.resolved_database_url)
    json_value = "CAST(:result AS JSON)" if engine.dialect.name == "postgresql" else ":result"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (name, is_admin, created_at) VALUES ('ann', false, '2026-11-30')"
            )
        )
        for status, worker, result in ROWS:
            conn.execute(
                text(
                    "INSERT INTO submissions (status, file_path, sha256, size_bytes, "
                    "original_filename, created_at, queued_at, attempt, worker_id, user_id, "
                    "result_metrics) VALUES (:status, 'uploads/x.zip', :sha, 1, 'x.zip', "
                    f"'2026-11-30', '2026-11-30', 1, :worker, 1, {json_value})"
                ),
                {"status": status, "worker": worker, "result": result, "sha": uuid.uuid4().hex},
            )
    engine.dispose()

    db.upgrade(s)
    engine = create_engine(s.resolved_database_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, worker_id, track FROM submissions ORDER BY id"))
        assert [tuple(r) for r in rows] == [
            (status, worker, "default") for status, worker, _ in ROWS
        ]
        columns = {
            index["name"]: index["column_names"]
            for index in inspect(conn).get_indexes("submissions")
        }
    assert columns["ix_submissions_best"][0] == "track"
    assert columns["ix_submissions_pool"][0] == "track"
    with db.session_scope(s) as session:
        assert [t.name for t in list_tracks(session, s)] == ["default"]
        board = leaderboard.compute(session, leaderboard.task_ranking(s))
    assert [(e.participant, e.score) for e in board.entries] == [("ann", 2.5)]

    engine.dispose()
    db.dispose_engines()
    command.downgrade(db.alembic_config(s.resolved_database_url), "0006")
    engine = create_engine(s.resolved_database_url)
    with engine.connect() as conn:
        assert "track" not in {c["name"] for c in inspect(conn).get_columns("submissions")}
        assert "tracks" not in inspect(conn).get_table_names()
        assert conn.execute(text("SELECT count(*) FROM submissions")).scalar() == len(ROWS)
    engine.dispose()

"""What one /metrics scrape costs the database, as the submissions table grows.

    python bench/metrics_scrape.py              # SQLite and PostgreSQL, 1k / 10k / 100k rows
    python bench/metrics_scrape.py --rows 1000 10000

The fleet metrics are read from the database at every scrape (docs/operations.md), all rows ever
finished included; this prints the time of one fleet collection (database part; Redis is left
out) per table size, and its ratio to the smallest table, twice: when no finished result changed
since the last scrape (the histograms are then kept, ``edc.changes``), and when one did just
before each scrape (a completed row updated, as a worker's write would). Goal: 100 ms at 100k.
After a change the histograms are computed again in the background while the scrape answers
with the last ones (edc.observability.prometheus): that pass's own time is printed too.

PostgreSQL: the server of the tests (``EDC_BENCH_PG_DSN``, default the tests' own); a database
is created for the run and dropped after it.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import insert, text

from edc import db
from edc.config import Settings
from edc.models import Submission, utcnow
from edc.observability.prometheus import FleetCollector, _compute_histograms
from edc.status import FailureReason, SubmissionStatus

PG_ADMIN_DSN = os.environ.get("EDC_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
STATUSES = [SubmissionStatus.COMPLETED] * 6 + [
    SubmissionStatus.FAILED,
    SubmissionStatus.QUEUED,
    SubmissionStatus.CANCELLED,
]
REPEATS = 5


def fill(settings: Settings, rows: int) -> None:
    """Top the table up to ``rows`` rows, in the proportions of a busy competition."""
    with db.session_scope(settings) as session:
        have = int(session.execute(text("SELECT count(*) FROM submissions")).scalar_one())
    now = utcnow()
    batch: list[dict[str, Any]] = []
    for _ in range(rows - have):
        status = random.choice(STATUSES)
        finished = status in (SubmissionStatus.COMPLETED, SubmissionStatus.FAILED)
        batch.append(
            {
                "status": status,
                "file_path": "uploads/x.zip",
                "sha256": "0" * 64,
                "size_bytes": random.randint(1_000, 5_000_000),
                "original_filename": "s.zip",
                "started_at": now - timedelta(seconds=random.uniform(1, 600)) if finished else None,
                "finished_at": now if finished else None,
                "failure_reason": FailureReason.CRASHED
                if status is SubmissionStatus.FAILED
                else None,
                "result_metrics": {
                    "load_s": random.uniform(0, 5),
                    "sandbox_start_s": random.random(),
                }
                if status is SubmissionStatus.COMPLETED
                else None,
            }
        )
    with db.session_scope(settings) as session:
        for start in range(0, len(batch), 10_000):
            session.execute(insert(Submission), batch[start : start + 10_000])


def scrape_ms(settings: Settings, *, after_a_change: bool) -> float:
    collector = FleetCollector(settings)
    list(collector.collect())  # warm: connections, the task, the query plans
    with db.session_scope(settings) as session:
        changed = session.execute(
            text("SELECT id FROM submissions WHERE status = 'completed' LIMIT 1")
        ).scalar_one()
    total = 0.0
    for _ in range(REPEATS):
        if after_a_change:
            with db.session_scope(settings) as session:
                session.execute(
                    text("UPDATE submissions SET failure_message = NULL WHERE id = :id"),
                    {"id": changed},
                )
        started = time.perf_counter()
        list(collector.collect())
        total += time.perf_counter() - started
    return total * 1000 / REPEATS


def pass_ms(settings: Settings) -> float:
    """One background computation of the histograms (a pass over every finished result)."""
    total = 0.0
    with db.session_scope(settings) as session:
        for _ in range(REPEATS):
            started = time.perf_counter()
            _compute_histograms(session, "cpu")
            total += time.perf_counter() - started
    return total * 1000 / REPEATS


def run(kind: str, settings: Settings, sizes: list[int]) -> None:
    db.upgrade(settings)
    first: dict[bool, float] = {}
    for rows in sorted(sizes):
        fill(settings, rows)
        for after_a_change in (False, True):
            ms = scrape_ms(settings, after_a_change=after_a_change)
            base = first.setdefault(after_a_change, ms)
            when = "after a result changed" if after_a_change else "nothing finished changed"
            print(
                f"{kind:<10} {rows:>8} rows  {when:<26} {ms:8.1f} ms per scrape  ×{ms / base:5.1f}"
            )
        print(f"{kind:<10} {rows:>8} rows  histograms' background pass {pass_ms(settings):8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    args = parser.parse_args()
    # No Redis: only the database part of a scrape is measured.
    common: dict[str, Any] = {"redis_url": "redis://127.0.0.1:1/0", "env": "dev"}
    with tempfile.TemporaryDirectory() as tmp:
        run("sqlite", Settings(data_dir=Path(tmp), **common), args.rows)
    name = f"edc_bench_metrics_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        with tempfile.TemporaryDirectory() as tmp:
            url = f"{base}/{name}"
            run("postgresql", Settings(data_dir=Path(tmp), database_url=url, **common), args.rows)
    finally:
        db.dispose_engines()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()

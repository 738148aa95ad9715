"""Scale-out benchmark: speed-up with 1, 2 and 4 workers, and what the fairness rule buys.

1. Throughput of submissions whose run is dominated by waiting (each spends LOAD_S loading, so the
   two cores are not the limit) through a real `edc up` with 1, 2 and 4 workers, all measured in
   this run, on SQLite and on PostgreSQL; prints submissions/s and the speed-up over one worker
   (goal: within 10% of linear). Each worker owns a core of its own (the task's limits.cpus is 1),
   so a machine runs as many workers as it has cores: the counts it cannot hold are left out.
2. Fairness: one participant queues 50 submissions, then another queues one. Counts how many jobs
   workers take before the single one, with the round-robin rule (the platform's workers) and
   without it (one first-come-first-served RQ queue), dequeuing through real Redis.

Usage: python bench/scale.py [--submissions 12] [--load-s 8] [--databases sqlite postgresql]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import redis
from rq import Queue

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portal_process import fresh_database
from tests.support.platform import kvcache_zip, start_platform, stop_platform

from edc import db
from edc.config import Settings
from edc.models import Submission, utcnow
from edc.scheduler import connection as redis_link
from edc.scheduler import fair_worker, producer
from edc.services import accounts
from edc.worker import executor

REDIS_URL = os.environ.get("EDC_BENCH_REDIS", "redis://127.0.0.1:6379/14")


def throughput(
    workers: int, submissions: int, load_s: float, scratch: Path, database: str
) -> float:
    redis.Redis.from_url(REDIS_URL).flushdb()
    on_postgres = []
    if database == "postgresql":
        on_postgres = [("EDC_DATABASE_URL", fresh_database("edc_bench_scale"))]
    platform = start_platform(
        scratch / f"{database}-w{workers}",
        ("EDC_REDIS_URL", REDIS_URL),
        ("EDC_PUBLIC_CHECK", "false"),
        *on_postgres,
        workers=workers,
    )
    try:
        # Time the fleet at work, not its start-up: wait until every worker listens.
        connection = redis.Redis.from_url(REDIS_URL)
        deadline = time.monotonic() + 60
        while connection.scard("rq:workers") < workers and time.monotonic() < deadline:
            time.sleep(0.2)
        payload = kvcache_zip(load_delay_s=load_s)
        started = time.perf_counter()
        ids = [platform.upload(f"s{i}.zip", payload).json()["id"] for i in range(submissions)]
        finals = [platform.wait_final(i, timeout_s=600) for i in ids]
        elapsed = time.perf_counter() - started
    finally:
        stop_platform(platform)
    bad = [f["id"] for f in finals if f["status"] != "completed"]
    if bad:
        raise SystemExit(f"submissions {bad} did not complete")
    return submissions / elapsed


def wait_in_jobs(fair: bool, scratch: Path) -> int:
    """Jobs taken before the single submission queued behind 50 of another participant."""
    redis.Redis.from_url(REDIS_URL).flushdb()
    settings = Settings(data_dir=scratch / f"fair-{fair}", redis_url=REDIS_URL)
    db.upgrade(settings)
    with db.session_scope(settings) as session:
        heavy = accounts.create_user(session, name="heavy").id
        light = accounts.create_user(session, name="light").id
    now = utcnow()
    ids = []
    with db.session_scope(settings) as session:
        for n, owner in enumerate([heavy] * 50 + [light]):
            row = Submission(
                file_path="uploads/x.zip",
                sha256="0" * 64,
                size_bytes=1,
                original_filename="x.zip",
                user_id=owner,
                created_at=now + timedelta(seconds=n),
                queued_at=now + timedelta(seconds=n),
            )
            session.add(row)
            session.flush()
            ids.append(row.id)
    single = ids[-1]
    connection = redis_link.redis_connection(settings)
    if fair:
        for submission_id in ids:
            producer.enqueue_submission(settings, submission_id)
        worker = fair_worker.make_worker(settings, name="bench")
        order_source = lambda: worker._ordered_queues  # noqa: E731
    else:
        fifo = Queue("bench-fifo", connection=connection)
        for submission_id in ids:
            fifo.enqueue_call(
                producer.JOB_FUNCTION, args=(submission_id,), job_id=f"fifo-{submission_id}"
            )
        order_source = lambda: [fifo]  # noqa: E731
    taken = 0
    while True:
        popped = Queue.dequeue_any(order_source(), None, connection=connection)
        assert popped is not None
        submission_id = int(popped[0].args[0])
        executor.claim(settings, submission_id, attempt=None, worker_id="bench")
        if submission_id == single:
            return taken
        taken += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--submissions", type=int, default=12)
    parser.add_argument("--load-s", type=float, default=8.0)
    parser.add_argument(
        "--databases", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        cores = len(os.sched_getaffinity(0))
        counts = [n for n in (1, 2, 4) if n <= cores]
        print(f"1. {args.submissions} submissions, each waiting {args.load_s:g} s in load:")
        if len(counts) < 3:
            print(f"   (this machine has {cores} cores: {counts[-1]} workers at most)")
        for database in args.databases:
            rates = {
                n: throughput(n, args.submissions, args.load_s, scratch, database) for n in counts
            }
            for n, rate in rates.items():
                speedup = rate / rates[1]
                print(
                    f"   {database}, {n} worker(s): {rate:.3f} submissions/s, speed-up "
                    f"{speedup:.2f} ({100 * speedup / n:.0f}% of linear)"
                )
        fair = wait_in_jobs(True, scratch)
        fifo = wait_in_jobs(False, scratch)
        print(
            "2. a single submission queued behind another participant's 50 waits for "
            f"{fair} job(s) with the round-robin rule, {fifo} without it"
        )


if __name__ == "__main__":
    main()

"""A real `edc portal` process on a fresh PostgreSQL database, and probes that time it from
outside: shared by the benchmarks that load the portal."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg

PG_ADMIN = os.environ.get("EDC_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("EDC_BENCH_REDIS", "redis://127.0.0.1:6379/13")
PROBE_EVERY_S = 0.05


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fresh_database(name: str) -> str:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}"


@contextmanager
def portal(data_dir: Path, database_url: str, **settings: str) -> Iterator[tuple[str, int]]:
    """`edc portal` on a free port with these EDC_* settings; yields (base URL, pid)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDC_")}
    env.update(EDC_DATA_DIR=str(data_dir), EDC_DATABASE_URL=database_url, EDC_REDIS_URL=REDIS_URL)
    env.update({f"EDC_{key.upper()}": value for key, value in settings.items()})
    process = subprocess.Popen(
        [sys.executable, "-m", "edc", "portal", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_answering(f"{base}/healthz", process)
        yield base, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_answering(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Until ``url`` answers 200; fails if ``process`` (its server) exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None, f"the server of {url} exited"
        assert time.monotonic() < deadline, f"{url} did not answer within {timeout_s:g} s"
        time.sleep(0.1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def probe(url: str, headers: dict[str, str], stop: threading.Event, out: list[float]) -> None:
    """GET ``url`` every PROBE_EVERY_S until ``stop``; each answer's time in ms goes to ``out``."""
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            began = time.perf_counter()
            client.get(url, headers=headers)
            out.append((time.perf_counter() - began) * 1e3)
            time.sleep(PROBE_EVERY_S)

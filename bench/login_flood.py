"""Log-in flood benchmark: what 40 clients guessing passwords without an account cost everyone else.

A real `edc portal` process on PostgreSQL; probes read `/api/v1/me` (with a valid token) and
`/healthz` every 50 ms, first on a quiet portal, then while 40 clients post `/api/v1/tokens` with
random names and passwords as fast as they are answered. Prints, for each phase, the probes'
p50/p95/p99 and the portal's resident memory, and how the flood was answered. The portal trusts
this host as its reverse proxy, and a third phase ("botnet") sends every guess from a new
forwarded address, so no address limit applies: only the bound on password checks does.

Goals (the portal-security issue): under the flood, `/api/v1/me` p99 <= 100 ms, `/healthz` p99
<= 20 ms, portal RSS growth <= 100 MB.

Usage: python bench/login_flood.py [--clients 40] [--seconds 25]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from portal_process import REDIS_URL, fresh_database, percentile, portal, probe

from edc import db
from edc.config import Settings
from edc.services import accounts


def flood(
    url: str,
    clients: int,
    seconds: float,
    out: multiprocessing.Queue[dict[int, int]],
    spread_addresses: bool,
) -> None:
    """In its own process (the probes' timings must not share a GIL with 40 clients): ``clients``
    concurrent guessers, each posting as soon as it is answered."""

    async def guesser(
        client: httpx.AsyncClient, deadline: float, answers: collections.Counter[int]
    ) -> None:
        while time.monotonic() < deadline:
            body = {"name": secrets.token_hex(6), "password": secrets.token_hex(8)}
            # A botnet behind the trusted proxy: each guess from a new address.
            spread = {"X-Forwarded-For": f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.1"}
            headers = spread if spread_addresses else {}
            answers[(await client.post(url, json=body, headers=headers)).status_code] += 1

    async def run() -> dict[int, int]:
        answers: collections.Counter[int] = collections.Counter()
        deadline = time.monotonic() + seconds
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            await asyncio.gather(*(guesser(client, deadline, answers) for _ in range(clients)))
        return dict(answers)

    out.put(asyncio.run(run()))


def phase(
    base: str, token: str, pid: int, seconds: float, clients: int, spread: bool = False
) -> dict[str, object]:
    stop = threading.Event()
    me: list[float] = []
    health: list[float] = []
    probes = [
        threading.Thread(
            target=probe, args=(f"{base}/api/v1/me", {"Authorization": f"Bearer {token}"}, stop, me)
        ),
        threading.Thread(target=probe, args=(f"{base}/healthz", {}, stop, health)),
    ]
    answers: multiprocessing.Queue[dict[int, int]] = multiprocessing.Queue()
    flooder = multiprocessing.Process(
        target=flood, args=(f"{base}/api/v1/tokens", clients, seconds, answers, spread)
    )
    portal = psutil.Process(pid)
    rss_before = portal.memory_info().rss
    peak = rss_before
    for thread in probes:
        thread.start()
    if clients:
        flooder.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, portal.memory_info().rss)
        time.sleep(0.2)
    stop.set()
    for thread in probes:
        thread.join()
    flood_answers = answers.get(timeout=60) if clients else {}
    if clients:
        flooder.join()
    return {
        "me": me,
        "health": health,
        "answers": flood_answers,
        "rss_mb": rss_before / 2**20,
        "peak_growth_mb": (peak - rss_before) / 2**20,
    }


def report(name: str, result: dict[str, object]) -> None:
    for probe_name in ("me", "health"):
        values = result[probe_name]
        assert isinstance(values, list)
        print(
            f"{name:6} {probe_name:7} n={len(values):4} p50 {statistics.median(values):7.1f} ms"
            f"  p95 {percentile(values, 0.95):7.1f} ms  p99 {percentile(values, 0.99):7.1f} ms"
        )
    print(
        f"{name:6} portal RSS {result['rss_mb']:.0f} MB, peak growth "
        f"{result['peak_growth_mb']:.0f} MB; flood answers {result['answers']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            database_url=fresh_database("edc_bench_login_flood"),
            redis_url=REDIS_URL,
            env="dev",
        )
        db.upgrade(settings)
        with db.session_scope(settings) as session:
            user = accounts.create_user(session, name="prober")
            token = accounts.issue_api_token(session, user=user, label="bench")
        proxy = {"env": "dev", "trusted_proxies": "127.0.0.1"}  # as behind a reverse proxy
        with portal(Path(tmp), str(settings.database_url), **proxy) as (base, pid):
            quiet = phase(base, token, pid, min(10.0, args.seconds), clients=0)
            flooded = phase(base, token, pid, args.seconds, clients=args.clients)
            botnet = phase(base, token, pid, args.seconds, clients=args.clients, spread=True)
    report("quiet", quiet)
    report("flood", flooded)
    report("botnet", botnet)


if __name__ == "__main__":
    main()

"""Log-in flood benchmark: what 40 clients guessing passwords without an account cost everyone else.

A real `edc portal` process on PostgreSQL; probes read `/api/v1/me` (with a valid token) and
`/healthz` every 50 ms, first on a quiet portal, then while 40 clients post `/api/v1/tokens` with
random names and passwords as fast as they are answered. Prints, for each phase, the probes'
p50/p95/p99 and the portal's resident memory, and how the flood was answered (0: no answer). The
portal trusts this host as its reverse proxy, and a third phase ("botnet") sends every guess from
a new forwarded address, so no address limit applies: only the bound on password checks does. A
fourth ("victim") aims the botnet at one real account, which is throttled after
EDC_LOGIN_MAX_FAILURES_PER_NAME failures, while its owner logs in every half second from an
address it logged in from before: prints the owner's success rate and log-in times, over the
phase and since the throttle engaged (until then the botnet's first guesses are real password
checks, queued one at a time like the owner's).

Goals (the portal-security issue): under the flood, `/api/v1/me` p99 <= 100 ms, `/healthz` p99
<= 20 ms, portal RSS growth <= 100 MB; the victim's owner still logs in. The last lines say of
each goal whether it was met, with the figure: the worst of the three flood phases for the
probes; the portal's peak RSS over the quiet portal's for memory; the owner's log-ins once the
throttle engaged (met with at least one success; not met if it never engaged: untested).

Usage: python bench/login_flood.py [--clients 40] [--seconds 25]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import multiprocessing
import secrets
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
from portal_process import REDIS_URL, fresh_database, percentile, portal, probe
from sqlalchemy import func, select

from edc import db
from edc.clock import aware_utc
from edc.config import Settings
from edc.models import LoginFailure
from edc.services import accounts

VICTIM = "victim"
VICTIM_PASSWORD = "the victim's own password"
VICTIM_HOME = "10.200.0.1"  # where the victim has logged in from before
VICTIM_EVERY_S = 0.5
FLOOD_PHASES = ("flood", "botnet", "victim")
ME_P99_GOAL_MS = 100.0
HEALTH_P99_GOAL_MS = 20.0
RSS_GROWTH_GOAL_MB = 100.0


def flood(
    url: str,
    clients: int,
    seconds: float,
    out: multiprocessing.Queue[dict[int, int]],
    spread_addresses: bool,
    target: str | None,
) -> None:
    """In its own process (the probes' timings must not share a GIL with 40 clients): ``clients``
    concurrent guessers, each posting as soon as it is answered; at ``target`` if given, else at
    random names."""

    async def guesser(
        client: httpx.AsyncClient, deadline: float, answers: collections.Counter[int]
    ) -> None:
        while time.monotonic() < deadline:
            body = {"name": target or secrets.token_hex(6), "password": secrets.token_hex(8)}
            # A botnet behind the trusted proxy: each guess from a new address.
            spread = {"X-Forwarded-For": f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.1"}
            headers = spread if spread_addresses else {}
            try:
                answers[(await client.post(url, json=body, headers=headers)).status_code] += 1
            except httpx.TransportError:
                answers[0] += 1  # no answer (a connection reset under load): counted, not fatal

    async def run() -> dict[int, int]:
        answers: collections.Counter[int] = collections.Counter()
        deadline = time.monotonic() + seconds
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            await asyncio.gather(*(guesser(client, deadline, answers) for _ in range(clients)))
        return dict(answers)

    out.put(asyncio.run(run()))


@dataclass(frozen=True)
class LogIn:
    at: datetime  # when it was sent (UTC)
    status: int
    ms: float


def victim_logs_in(base: str, stop: threading.Event, out: list[LogIn]) -> None:
    """The attacked account's owner, from home, every VICTIM_EVERY_S until ``stop``."""
    body = {"name": VICTIM, "password": VICTIM_PASSWORD}
    with httpx.Client(timeout=30, headers={"X-Forwarded-For": VICTIM_HOME}) as client:
        while not stop.is_set():
            at, began = datetime.now(UTC), time.perf_counter()
            status = client.post(f"{base}/api/v1/tokens", json=body).status_code
            out.append(LogIn(at, status, (time.perf_counter() - began) * 1e3))
            time.sleep(VICTIM_EVERY_S)


def throttle_engaged(settings: Settings) -> datetime | None:
    """When the victim's name got its first throttled check (the database keeps the record)."""
    key = accounts._check_key(VICTIM)
    with db.session_scope(settings) as session:
        first = session.scalar(
            select(func.min(LoginFailure.failed_at)).where(LoginFailure.key == key)
        )
    return aware_utc(first) if first is not None else None


def phase(
    base: str,
    token: str,
    pid: int,
    seconds: float,
    clients: int,
    spread: bool = False,
    target: str | None = None,
) -> dict[str, object]:
    stop = threading.Event()
    me: list[float] = []
    health: list[float] = []
    victim: list[LogIn] = []
    probes = [
        threading.Thread(
            target=probe, args=(f"{base}/api/v1/me", {"Authorization": f"Bearer {token}"}, stop, me)
        ),
        threading.Thread(target=probe, args=(f"{base}/healthz", {}, stop, health)),
    ]
    if target is not None:
        probes.append(threading.Thread(target=victim_logs_in, args=(base, stop, victim)))
    answers: multiprocessing.Queue[dict[int, int]] = multiprocessing.Queue()
    flooder = multiprocessing.Process(
        target=flood, args=(f"{base}/api/v1/tokens", clients, seconds, answers, spread, target)
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
        "victim": victim,
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
    victim = result["victim"]
    assert isinstance(victim, list)
    if victim:
        report_owner(name, "over the phase", victim)
    engaged = result.get("throttle_engaged")
    if victim and isinstance(engaged, datetime):
        after = [log_in for log_in in victim if log_in.at >= engaged]
        into = (engaged - victim[0].at).total_seconds()
        report_owner(name, f"once throttled ({into:+.1f} s)", after)


def report_owner(name: str, when: str, log_ins: list[LogIn]) -> None:
    if not log_ins:
        print(f"{name:6} owner's log-ins from home {when}: none")
        return
    ok = sum(1 for log_in in log_ins if log_in.status == 201)
    times = [log_in.ms for log_in in log_ins]
    print(
        f"{name:6} owner's log-ins from home {when}: {ok}/{len(log_ins)} succeeded "
        f"({100 * ok / len(log_ins):.0f}%), p50 {statistics.median(times):.1f} ms, "
        f"p99 {percentile(times, 0.99):.1f} ms; answers "
        f"{dict(collections.Counter(log_in.status for log_in in log_ins))}"
    )


def goal(text: str, met: bool, figure: str) -> None:
    print(f"goal {text}: {'met' if met else 'NOT met'} ({figure})")


def judge(results: dict[str, dict[str, object]]) -> None:
    """One line per goal of the docstring: met or NOT met, and the figure it was judged on."""
    for probe_name, path, limit in (
        ("me", "/api/v1/me", ME_P99_GOAL_MS),
        ("health", "/healthz", HEALTH_P99_GOAL_MS),
    ):
        p99s = {}
        for name in FLOOD_PHASES:
            values = results[name][probe_name]
            assert isinstance(values, list)
            p99s[name] = percentile(values, 0.99)  # nan when no probe was answered: not met
        worst = max(p99s, key=lambda name: math.inf if math.isnan(p99s[name]) else p99s[name])
        goal(
            f"{path} p99 <= {limit:g} ms under the flood",
            all(value <= limit for value in p99s.values()),
            f"no probe answered in the {worst} phase"
            if math.isnan(p99s[worst])
            else f"worst {p99s[worst]:.1f} ms, in the {worst} phase",
        )
    quiet_mb = results["quiet"]["rss_mb"]
    assert isinstance(quiet_mb, float)
    peaks = {}
    for name in FLOOD_PHASES:
        before, growth = results[name]["rss_mb"], results[name]["peak_growth_mb"]
        assert isinstance(before, float) and isinstance(growth, float)
        peaks[name] = before + growth
    highest = max(peaks, key=peaks.__getitem__)
    grown = peaks[highest] - quiet_mb
    goal(
        f"portal RSS growth <= {RSS_GROWTH_GOAL_MB:g} MB",
        grown <= RSS_GROWTH_GOAL_MB,
        f"{grown:.0f} MB over the quiet portal's {quiet_mb:.0f} MB, peak in the {highest} phase",
    )
    victim, engaged = results["victim"]["victim"], results["victim"].get("throttle_engaged")
    assert isinstance(victim, list)
    if not isinstance(engaged, datetime):
        goal("the victim's owner still logs in", False, "the throttle never engaged: untested")
        return
    after = [log_in for log_in in victim if log_in.at >= engaged]
    ok = sum(1 for log_in in after if log_in.status == 201)
    goal(
        "the victim's owner still logs in",
        ok > 0,
        f"{ok}/{len(after)} of the owner's log-ins succeeded once the name was throttled",
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
            accounts.create_user(session, name=VICTIM, password=VICTIM_PASSWORD)
        proxy = {"env": "dev", "trusted_proxies": "127.0.0.1"}  # as behind a reverse proxy
        with portal(Path(tmp), str(settings.database_url), **proxy) as (base, pid):
            quiet = phase(base, token, pid, min(10.0, args.seconds), clients=0)
            flooded = phase(base, token, pid, args.seconds, clients=args.clients)
            botnet = phase(base, token, pid, args.seconds, clients=args.clients, spread=True)
            # The owner has logged in from home before the attack begins.
            home = {"X-Forwarded-For": VICTIM_HOME}
            body = {"name": VICTIM, "password": VICTIM_PASSWORD}
            httpx.post(f"{base}/api/v1/tokens", json=body, headers=home).raise_for_status()
            attacked = phase(
                base, token, pid, args.seconds, args.clients, spread=True, target=VICTIM
            )
            attacked["throttle_engaged"] = throttle_engaged(settings)
    results = {"quiet": quiet, "flood": flooded, "botnet": botnet, "victim": attacked}
    for name, result in results.items():
        report(name, result)
    judge(results)


if __name__ == "__main__":
    main()

"""Load benchmark: many participants upload at once to `edc up`, hostile uploads mixed in.

`edc up --workers 2` runs as a subprocess on a fresh PostgreSQL database and this machine's Redis
(a database index of its own, flushed first), with a quick task (few requests, 16 tokens) and no
public-prompt check, so a run takes minutes. Each of the concurrent clients is its own participant
with its own API token (made with `edc user create` against the platform's database) and uploads
its share; about one upload in ten is deliberately bad (not a zip, no entry point, over the size
limit). Then every accepted id is followed through the API until it ends.

It checks, and says so when any fails: every upload was either accepted (201) or refused with a
4xx and a `detail`; every accepted id ended `completed` or `failed`; the platform holds exactly
the accepted ids, so none was lost and no refusal left a row. It prints accepted uploads per second,
refusals by reason (the `code` field), and the end-to-end p50/p99 from upload accepted to the
submission's `finished_at`.

Usage: python bench/load.py [--uploads 500] [--clients 50] [--workers 2]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from portal_process import PG_ADMIN, free_port, fresh_database

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.platform import kvcache_zip, quick_task  # noqa: E402

REDIS_URL = os.environ.get("EDC_BENCH_LOAD_REDIS", "redis://127.0.0.1:6379/12")
# The key a test run sets on the Redis database index it claims (tests/conftest.py).
TEST_RUN_CLAIM = "edc:test-run-owner"
DATABASE = "edc_bench_load"
MAX_UPLOAD_MB = 1
FINAL = ("completed", "failed", "cancelled")


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def flushed_redis(url: str) -> None:
    conn = redis.Redis.from_url(url)
    try:
        if conn.get(TEST_RUN_CLAIM) is not None:
            raise SystemExit(f"{url} is claimed by a running test suite; set EDC_BENCH_LOAD_REDIS")
        conn.flushdb()
    finally:
        conn.close()


# --- what the participants upload ---


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


GOOD = kvcache_zip()
BAD: dict[str, bytes] = {
    "not a zip": random.Random(1).randbytes(4096),
    "no entry point": zip_of({"README.txt": b"the decoder is elsewhere\n"}),
    "over the size limit": zip_of(
        {"submission.py": b"pass\n", "w.bin": random.Random(2).randbytes(2 * 2**20)}
    ),
}


def plan(uploads: int, clients: int) -> list[list[str]]:
    """Each client's uploads in order: "good" or a kind of bad, about one in ten bad."""
    kinds = list(BAD)
    shares: list[list[str]] = [[] for _ in range(clients)]
    for index in range(uploads):
        kind = kinds[(index // 10) % len(kinds)] if index % 10 == 7 else "good"
        shares[index % clients].append(kind)
    return shares


# --- the platform ---


class Platform:
    def __init__(self, scratch: Path, workers: int) -> None:
        self.database_url = fresh_database(DATABASE)
        flushed_redis(REDIS_URL)
        self.log_path = scratch / "edc-up.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EDC_")}
        self.env.update(
            EDC_DATA_DIR=str(scratch / "data"),
            EDC_DATABASE_URL=self.database_url,
            EDC_REDIS_URL=REDIS_URL,
            EDC_SANDBOX="bwrap",
            EDC_TASK_DIR=str(quick_task(scratch / "task")),
            EDC_PUBLIC_CHECK="false",
            EDC_MAX_UPLOAD_MB=str(MAX_UPLOAD_MB),
            # The limits have their own tests; here every participant uploads in a burst.
            EDC_SUBMISSIONS_PER_DAY="100000",
            EDC_MAX_QUEUED_PER_USER="100000",
        )
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edc", "up", "--port", str(port), "--workers", str(workers)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"edc up exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit("edc up did not become ready in 60 s")

    def create_user(self, name: str, *, admin: bool = False) -> str:
        """`edc user create` against the platform's database; returns the printed API token."""
        args = [sys.executable, "-m", "edc", "user", "create", name] + (["--admin"] * admin)
        done = subprocess.run(
            args, env=self.env, capture_output=True, text=True, timeout=120, check=True
        )
        return done.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


# --- the run ---


@dataclass
class Outcome:
    kind: str
    status: int | None
    code: str | None = None
    detail: str | None = None
    submission_id: int | None = None
    accepted_at: float | None = None  # wall clock (the server's finished_at is wall clock too)
    error: str | None = None


@dataclass
class Client:
    name: str
    token: str
    kinds: list[str]
    outcomes: list[Outcome] = field(default_factory=list)


def upload_all(url: str, client: Client, start: threading.Barrier) -> None:
    with httpx.Client(
        base_url=url, timeout=120, headers={"Authorization": f"Bearer {client.token}"}
    ) as http:
        start.wait()
        for kind in client.kinds:
            payload = GOOD if kind == "good" else BAD[kind]
            try:
                response = http.post(
                    "/api/v1/submissions",
                    files={"file": ("decoder.zip", payload, "application/zip")},
                )
            except httpx.HTTPError as exc:
                client.outcomes.append(Outcome(kind, None, error=f"{type(exc).__name__}: {exc}"))
                continue
            outcome = Outcome(kind, response.status_code)
            try:
                body: dict[str, Any] = response.json()
            except ValueError:
                body = {}
            outcome.code, outcome.detail = body.get("code"), body.get("detail")
            if response.status_code == 201:
                outcome.submission_id, outcome.accepted_at = int(body["id"]), time.time()
            client.outcomes.append(outcome)


def follow(url: str, clients: list[Client], timeout_s: float) -> dict[int, dict[str, Any]]:
    """Each participant's submissions, read through the API until all accepted ones are final."""
    finals: dict[int, dict[str, Any]] = {}
    waiting = {o.submission_id for c in clients for o in c.outcomes if o.submission_id}
    deadline = time.monotonic() + timeout_s
    last_report = time.monotonic()
    with httpx.Client(base_url=url, timeout=60) as http:
        while waiting and time.monotonic() < deadline:
            for client in clients:
                mine = {o.submission_id for o in client.outcomes if o.submission_id} & waiting
                if not mine:
                    continue
                listing = http.get(
                    "/api/v1/submissions",
                    params={"limit": 100},
                    headers={"Authorization": f"Bearer {client.token}"},
                ).json()
                for item in listing["items"]:
                    if item["id"] in mine and item["status"] in FINAL:
                        finals[item["id"]] = item
                        waiting.discard(item["id"])
            if time.monotonic() - last_report > 30:
                print(f"   … {len(finals)} finished, {len(waiting)} still queued or running")
                last_report = time.monotonic()
            time.sleep(1.0)
    return finals


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def report(
    clients: list[Client],
    upload_s: float,
    finals: dict[int, dict[str, Any]],
    held: list[int],
    drain_s: float,
) -> bool:
    outcomes = [o for c in clients for o in c.outcomes]
    accepted = [o for o in outcomes if o.status == 201]
    refused = [o for o in outcomes if o.status is not None and 400 <= o.status < 500]
    unclear = [o for o in outcomes if o not in accepted and (o not in refused or not o.detail)]
    good = sum(o.kind == "good" for o in outcomes)
    print(
        f"uploads: {len(outcomes)} from {len(clients)} participants at once "
        f"({good} good, {len(outcomes) - good} deliberately bad)"
    )
    print(
        f"accepted: {len(accepted)} in {upload_s:.1f} s of uploading: "
        f"{len(accepted) / upload_s:.1f} accepted/s"
    )
    print("refused, by reason (HTTP status, code):")
    for (status, code, kind), count in sorted(
        Counter((o.status, o.code, o.kind) for o in refused).items(), key=str
    ):
        print(f"   {count:4d}  {status} {code:<22} (sent: {kind})")
    misjudged = [o for o in accepted if o.kind != "good"] + [o for o in refused if o.kind == "good"]

    ids = [o.submission_id for o in accepted if o.submission_id is not None]
    ended = Counter(finals[i]["status"] for i in ids if i in finals)
    lost = [i for i in ids if i not in finals]
    print(f"ended: {dict(ended)} {drain_s:.0f} s after the first upload; not finished: {len(lost)}")
    by_id = {o.submission_id: o for o in accepted}
    e2e = [
        datetime.fromisoformat(finals[i]["finished_at"]).timestamp() - by_id[i].accepted_at
        for i in ids
        if i in finals and finals[i]["finished_at"] and by_id[i].accepted_at
    ]
    if e2e:
        print(
            f"end to end (upload accepted → finished_at) over {len(e2e)}: "
            f"p50 {statistics.median(e2e):.1f} s, p99 {percentile(e2e, 0.99):.1f} s, "
            f"max {max(e2e):.1f} s"
        )
        # The two parts of it: waiting in the queue, and the evaluation itself.
        waits, runs = [], []
        for i in ids:
            item = finals.get(i, {})
            if item.get("started_at") and item.get("finished_at") and by_id[i].accepted_at:
                started = datetime.fromisoformat(item["started_at"]).timestamp()
                finished = datetime.fromisoformat(item["finished_at"]).timestamp()
                waits.append(started - by_id[i].accepted_at)
                runs.append(finished - started)
        if runs:
            print(
                f"   queued (accepted → started_at): p50 {statistics.median(waits):.1f} s, "
                f"p99 {percentile(waits, 0.99):.1f} s; evaluating (started_at → finished_at): "
                f"p50 {statistics.median(runs):.2f} s, p99 {percentile(runs, 0.99):.2f} s"
            )
        print(f"evaluations per second, first upload to last finish: {len(e2e) / drain_s:.2f}")
    failed = Counter(
        finals[i].get("failure_reason") for i in ids if finals.get(i, {}).get("status") == "failed"
    )
    if failed:
        print(f"failure reasons: {dict(failed)}")

    extra = sorted(set(held) - set(ids))
    missing = sorted(set(ids) - set(held))
    checks = {
        "every upload accepted (201) or refused with a 4xx and a detail": not unclear,
        "good uploads accepted, bad ones refused": not misjudged,
        "every accepted id ended completed or failed": not lost
        and set(ended) <= {"completed", "failed"},
        "the platform holds exactly the accepted ids (none lost, no row from a refusal)": not extra
        and not missing,
    }
    for claim, holds in checks.items():
        print(f"{'ok  ' if holds else 'FAIL'} {claim}")
    for o in unclear[:10]:
        print(f"   unclear: {o}")
    for o in misjudged[:10]:
        print(f"   misjudged: {o}")
    if lost:
        print(f"   not finished: {lost[:20]}")
    if extra or missing:
        print(f"   held but not accepted: {extra[:20]}; accepted but not held: {missing[:20]}")
    return all(checks.values())


def all_held_ids(url: str, admin_token: str) -> list[int]:
    ids: list[int] = []
    with httpx.Client(
        base_url=url, timeout=60, headers={"Authorization": f"Bearer {admin_token}"}
    ) as http:
        while True:
            page = http.get(
                "/api/v1/submissions", params={"everyone": True, "limit": 100, "offset": len(ids)}
            ).json()
            ids += [item["id"] for item in page["items"]]
            if len(ids) >= page["total"] or not page["items"]:
                return ids


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--uploads", type=int, default=500)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--timeout", type=float, default=3600, help="seconds to wait for the queue to drain"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        platform = Platform(Path(tmp), args.workers)
        ok = False
        try:
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=8) as pool:
                names = [f"load{index:03d}" for index in range(args.clients)]
                tokens = list(pool.map(platform.create_user, names))
                admin_token = platform.create_user("loadadmin", admin=True)
            took = time.perf_counter() - started
            print(f"{args.clients} participants made with `edc user create` in {took:.1f} s")
            clients = [
                Client(name, token, kinds)
                for name, token, kinds in zip(
                    names, tokens, plan(args.uploads, args.clients), strict=True
                )
            ]
            start = threading.Barrier(len(clients))
            threads = [
                threading.Thread(target=upload_all, args=(platform.url, c, start)) for c in clients
            ]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            upload_s = time.perf_counter() - started
            finals = follow(platform.url, clients, args.timeout)
            drain_s = time.perf_counter() - started
            ok = report(clients, upload_s, finals, all_held_ids(platform.url, admin_token), drain_s)
        finally:
            platform.stop()
            if not ok:
                log = platform.log_path.read_text(errors="replace")
                print(f"platform log (last lines):\n{log[-4000:]}")
            drop_database(DATABASE)
            flushed_redis(REDIS_URL)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()

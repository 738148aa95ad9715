"""Intake benchmark: `edc up` on PostgreSQL and Redis, measured from outside over HTTP.

Prints these figures, each measured in this one run (the machine is shared and noisy):
0. the yardsticks, each on one uvicorn process: the plain FastAPI upload app
   (bench/bare_upload_app.py), and the same app made durable (bench/floor_upload_app.py): it also
   hashes, syncs and renames the file, inserts one row and enqueues it, with no check at all.
   Their ratio is what keeping uploads safe costs on its own, before any of the portal's checks;
1. accepted uploads per second, 1 MB zips from 20 concurrent clients, each a participant of its
   own (no worker running), and in the same run the same client against a plain FastAPI upload app
   (bench/bare_upload_app.py): their ratio is the figure (goal: at least 0.70), with each
   server's CPU time per upload (steadier than rates on a shared machine). One participant
   cannot send 20 at once: the platform holds at most EDC_UPLOADS_IN_FLIGHT_PER_USER (2) of theirs
   in flight, and takes them one at a time under the participant's lock, so its limits are counted
   right; ``--one-participant`` measures that case with the cap lifted. The portal is measured on
   one process, then on ``--portal-processes`` (EDC_PORTAL_PROCESSES, default 2 here);
2. p50/p99 of "accepted → claimed by an idle worker" (the sandbox starts right after unpacking);
3. the portal's peak memory while it receives one 500 MB upload, over its idle baseline
   (goal: under 100 MB).

Usage: python bench/intake.py [--uploads 200] [--big-mb 500] [--one-participant]
       [--portal-processes 2]
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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import redis
from portal_process import REDIS_URL, free_port, fresh_database, wait_answering


def zip_bytes(payload_bytes: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("submission.py", "print('ok')\n")
        archive.writestr("weights.bin", random.randbytes(payload_bytes))
    return buffer.getvalue()


class Platform:
    def __init__(
        self,
        data_dir: Path,
        database_url: str,
        workers: int,
        max_upload_mb: int,
        portal_processes: int = 1,
    ) -> None:
        redis.Redis.from_url(REDIS_URL).flushdb()
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDC_")}
        env.update(
            EDC_DATA_DIR=str(data_dir),
            EDC_DATABASE_URL=database_url,
            EDC_REDIS_URL=REDIS_URL,
            EDC_SANDBOX="bwrap",
            EDC_MAX_UPLOAD_MB=str(max_upload_mb),
            # The benchmark uploads in bursts as one participant.
            EDC_MAX_QUEUED_PER_USER="100000",
            EDC_SUBMISSIONS_PER_DAY="100000",
            # Only --one-participant sends more than two of one participant's at once.
            EDC_UPLOADS_IN_FLIGHT_PER_USER="1000",
            EDC_PORTAL_PROCESSES=str(portal_processes),
        )
        self.processes = portal_processes
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edc",
                "up",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    self.env = env
                    self.headers = self.participant("bench")
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("edc up did not become ready")

    def participant(self, name: str) -> dict[str, str]:
        """The headers of a new participant's API token."""
        return {"Authorization": f"Bearer {create_user(self.env, name)}"}

    def portal_process(self) -> psutil.Process:
        for child in psutil.Process(self.process.pid).children(recursive=True):
            if "portal" in child.cmdline():
                return child
        raise RuntimeError("no portal process found")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def create_user(env: dict[str, str], name: str) -> str:
    """An uploader: `edc user create` against the platform's database; returns its token."""
    done = subprocess.run(
        [sys.executable, "-m", "edc", "user", "create", name],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def upload(client: httpx.Client, payload: bytes) -> tuple[int, float]:
    response = client.post("/api/v1/submissions", files={"file": ("s.zip", payload)})
    return response.status_code, time.time()


def accept_rate(
    url: str,
    path: str,
    senders: list[dict[str, str]],
    uploads: int,
    clients: int,
    server: psutil.Process,
) -> tuple[float, float]:
    """Accepted 1 MB uploads per second from ``clients`` concurrent clients, once both ends are
    warm, and the ``server`` process's CPU time per upload (ms); upload i is sent with the
    headers ``senders[i % len(senders)]``."""
    payload = zip_bytes(1024 * 1024)

    def send(i: int) -> int:
        headers = senders[i % len(senders)]
        return client.post(path, files={"file": ("s.zip", payload)}, headers=headers).status_code

    with httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(clients) as pool:
        # Warm-up, alike for both apps: connections (client, database pool), first uses.
        codes = list(pool.map(send, range(2 * clients)))
        started, cpu = time.perf_counter(), cpu_s_of(server)
        codes += pool.map(send, range(uploads))
        elapsed, used = time.perf_counter() - started, cpu_s_of(server)
    assert codes.count(201) == len(codes), f"refused: {sorted(set(codes))}"
    cpu_s = used - cpu
    return uploads / elapsed, cpu_s * 1000 / uploads


def cpu_s_of(server: psutil.Process) -> float:
    """CPU seconds of ``server`` and the processes it started (a portal's several processes)."""
    tree = [server, *server.children(recursive=True)]
    return sum(t.user + t.system for t in (p.cpu_times() for p in tree))


def yardstick_rate(
    scratch: Path, module: str, uploads: int, clients: int, env: dict[str, str] | None = None
) -> tuple[float, float]:
    """The same client against ``module``'s app (bench/bare_upload_app.py, or its floor) under
    one uvicorn process; ``env`` adds to its environment."""
    port = free_port()
    store = scratch / module
    store.mkdir()
    env = {
        **os.environ,
        "BARE_UPLOAD_DIR": str(store),
        "FLOOR_UPLOAD_DIR": str(store),
        **(env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", f"{module}:app", "--port", str(port)],
        cwd=Path(__file__).parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_answering(f"{url}/docs", process, timeout_s=30)
        return accept_rate(url, "/upload", [{}], uploads, clients, psutil.Process(process.pid))
    finally:
        process.terminate()
        process.wait(timeout=30)


def floor_rate(scratch: Path, uploads: int, clients: int) -> tuple[float, float]:
    """bench/floor_upload_app.py: the plain app made durable, with no check."""
    database = fresh_database("edc_bench_intake_floor").replace("+psycopg", "")
    env = {"FLOOR_DATABASE_URL": database, "FLOOR_REDIS_URL": REDIS_URL}
    return yardstick_rate(scratch, "floor_upload_app", uploads, clients, env)


def bench_accept_rate(
    platforms: list[Platform], uploads: int, clients: int, scratch: Path, one_participant: bool
) -> None:
    bare, bare_cpu = yardstick_rate(scratch, "bare_upload_app", uploads, clients)
    floor, floor_cpu = floor_rate(scratch, uploads, clients)
    print(
        f"0. {uploads} uploads of 1 MB from {clients} clients: plain FastAPI app {bare:.1f}/s "
        f"(CPU {bare_cpu:.1f} ms per upload); the same app made durable (hash, sync, rename, "
        f"one row, one enqueue; no check) {floor:.1f}/s (CPU {floor_cpu:.1f} ms), ratio "
        f"{floor / bare:.2f}"
    )
    for platform in platforms:
        if one_participant:
            senders, who = [platform.headers], "one participant"
        else:
            senders = [platform.participant(f"bench-{i}") for i in range(clients)]
            who = "a participant each"
        portal = platform.portal_process()
        path = "/api/v1/submissions"
        ours, our_cpu = accept_rate(platform.url, path, senders, uploads, clients, portal)
        ratio = ours / bare
        print(
            f"1. {uploads} uploads of 1 MB from {clients} clients ({who}): portal "
            f"({platform.processes} process{'es' if platform.processes > 1 else ''}) {ours:.1f}/s, "
            f"plain FastAPI app {bare:.1f}/s, ratio {ratio:.2f} (goal >= 0.70: "
            f"{'met' if ratio >= 0.70 else 'NOT met'}); server CPU per upload: portal "
            f"{our_cpu:.1f} ms, plain app {bare_cpu:.1f} ms"
        )


def bench_claim_latency(url: str, headers: dict[str, str], count: int) -> None:
    payload = zip_bytes(1024)
    waits = []
    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        for _ in range(count):
            code, accepted_at = upload(client, payload)
            assert code == 201
            submission_id = client.get("/api/v1/submissions?limit=1").json()["items"][0]["id"]
            while True:
                body = client.get(f"/api/v1/submissions/{submission_id}").json()
                if body["status"] in ("completed", "failed"):
                    break
                time.sleep(0.05)
            started = datetime.fromisoformat(body["started_at"]).timestamp()
            waits.append(max(0.0, started - accepted_at) * 1000)
    waits.sort()
    p99 = waits[min(len(waits) - 1, int(0.99 * len(waits)))]
    print(
        f"2. accepted → claimed by an idle worker over {count} submissions: "
        f"p50 {statistics.median(waits):.1f} ms, p99 {p99:.1f} ms"
    )


def chunks_of(path: Path, size: int = 1024 * 1024) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(size):
            yield block


def bench_big_upload_memory(platform: Platform, big_mb: int, scratch: Path) -> None:
    portal = platform.portal_process()
    time.sleep(1.0)
    baseline = portal.memory_info().rss
    big = scratch / "big.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("submission.py", "print('ok')\n")
        with archive.open("weights.bin", "w", force_zip64=True) as member:
            block = random.randbytes(1024 * 1024)
            for _ in range(big_mb):
                member.write(block)
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, portal.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    boundary = "edcbenchboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        yield from chunks_of(big)
        yield tail

    started = time.perf_counter()
    response = httpx.post(
        f"{platform.url}/api/v1/submissions",
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}", **platform.headers},
        timeout=600,
    )
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    over = (peak - baseline) / 2**20
    print(
        f"3. one {big_mb} MB upload ({response.status_code}) in {elapsed:.1f} s: portal RSS "
        f"{baseline / 2**20:.0f} MB idle, {peak / 2**20:.0f} MB peak, "
        f"+{over:.1f} MB over baseline (goal < 100 MB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--claims", type=int, default=30)
    parser.add_argument("--big-mb", type=int, default=500)
    parser.add_argument(
        "--one-participant",
        action="store_true",
        help="send every upload of figure 1 as one participant",
    )
    parser.add_argument(
        "--portal-processes",
        type=int,
        default=2,
        help="figure 1 also with the portal on this many processes (EDC_PORTAL_PROCESSES)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        platform = Platform(scratch / "a", fresh_database("edc_bench_intake"), 0, args.big_mb + 10)
        try:
            platforms = [platform]
            if args.portal_processes > 1:
                platforms.append(
                    Platform(
                        scratch / "c",
                        fresh_database("edc_bench_intake_processes"),
                        0,
                        10,
                        portal_processes=args.portal_processes,
                    )
                )
            try:
                bench_accept_rate(
                    platforms, args.uploads, args.clients, scratch, args.one_participant
                )
            finally:
                for other in platforms[1:]:
                    other.stop()
            bench_big_upload_memory(platform, args.big_mb, scratch)
        finally:
            platform.stop()
        if args.claims < 1:
            return
        platform = Platform(scratch / "b", fresh_database("edc_bench_intake"), 1, 10)
        try:
            bench_claim_latency(platform.url, platform.headers, args.claims)
        finally:
            platform.stop()


if __name__ == "__main__":
    main()

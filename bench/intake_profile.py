"""Where an upload's CPU goes: the portal's intake, phase by phase, in one process.

bench/intake.py gives the figure (uploads per second against a plain FastAPI app); this says what
the difference is made of. The portal app and the plain app (bench/bare_upload_app.py) each take
``--uploads`` 1 MB uploads from 4 concurrent in-process clients (httpx over ASGI, no sockets), on
PostgreSQL and Redis; the process's CPU per upload is printed for both (the client's share is in
both), then the portal's thread CPU per upload in each intake phase: the API token's lookup, the
rules checked before the body, writing and hashing the file, the archive's check, the row's
insert under the owner's lock (rules checked again), and the enqueue.

Usage: python bench/intake_profile.py [--uploads 200]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from intake import create_user, zip_bytes
from portal_process import REDIS_URL, fresh_database

CLIENTS = 4
WARM_UP = 2 * CLIENTS
# (module, attribute) of each phase, timed in the thread that runs it.
PHASES = {
    "API token lookup": ("edc.portal.auth", "_resolve"),
    "rules before the body": ("edc.services.submissions", "_check_rules"),
    "file write + sha256": ("edc.storage", "_PartFile.write"),
    "file commit": ("edc.storage", "_PartFile.commit"),
    "archive check": ("edc.services.submissions", "inspect_archive"),
    "row insert (rules again)": ("edc.services.submissions", "_insert_queued"),
    "enqueue": ("edc.services.submissions", "enqueue_submission"),
}


def timed_phases(spent: Counter[str]) -> None:
    """Wrap each phase so its thread CPU adds up in ``spent`` (phases run on several threads)."""
    import importlib

    lock = threading.Lock()

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                used = time.thread_time() - began
                with lock:
                    spent[name] += used

        return wrapper

    for name, (module_name, attribute) in PHASES.items():
        owner: Any = importlib.import_module(module_name)
        *path, last = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, last, timed(name, getattr(owner, last)))


async def cpu_per_upload(app: Any, path: str, tokens: list[str], uploads: int) -> float:
    """Process CPU (ms) per accepted upload, ``CLIENTS`` at a time, after a warm-up of
    ``WARM_UP`` (``uploads`` a multiple of ``CLIENTS``)."""
    payload = zip_bytes(1024 * 1024)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

        async def one(i: int) -> None:
            headers = {"Authorization": f"Bearer {tokens[i % len(tokens)]}"} if tokens else {}
            files = {"file": ("s.zip", payload)}
            response = await client.post(path, files=files, headers=headers)
            assert response.status_code == 201, response.text

        await asyncio.gather(*(one(i) for i in range(WARM_UP)))
        began = time.process_time()
        for first in range(0, uploads, CLIENTS):
            await asyncio.gather(*(one(first + j) for j in range(CLIENTS)))
        return (time.process_time() - began) * 1000 / uploads


async def main(uploads: int) -> None:
    uploads -= uploads % CLIENTS
    scratch = tempfile.mkdtemp()
    # This process runs the portal too: it gets the same settings as the commands below.
    for name in [k for k in os.environ if k.startswith("EDC_")]:
        del os.environ[name]
    env = dict(os.environ)
    env.update(
        EDC_DATA_DIR=scratch,
        EDC_DATABASE_URL=fresh_database("edc_bench_intake_profile"),
        EDC_REDIS_URL=REDIS_URL,
        EDC_SUBMISSIONS_PER_DAY="100000",
        EDC_MAX_QUEUED_PER_USER="100000",
    )
    subprocess.run([sys.executable, "-m", "edc", "db", "upgrade"], env=env, check=True)
    tokens = [create_user(env, f"profile-{i}") for i in range(CLIENTS)]
    os.environ.update(env)
    os.environ["BARE_UPLOAD_DIR"] = scratch
    from bare_upload_app import app as bare_app

    from edc.config import Settings
    from edc.portal.app import create_app

    spent: Counter[str] = Counter()
    timed_phases(spent)
    portal_app = create_app(Settings())
    bare = await cpu_per_upload(bare_app, "/upload", [], uploads)
    async with portal_app.router.lifespan_context(portal_app):
        spent.clear()
        ours = await cpu_per_upload(portal_app, "/api/v1/submissions", tokens, uploads)
    counted = uploads + WARM_UP  # the phases' counters ran through the warm-up too
    print(
        f"process CPU per 1 MB upload, {CLIENTS} in-process clients (client included): "
        f"portal {ours:.2f} ms, plain FastAPI app {bare:.2f} ms"
    )
    print("portal thread CPU per upload, by intake phase:")
    for name in PHASES:
        print(f"  {name:26s} {spent[name] * 1000 / counted:6.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=200)
    asyncio.run(main(parser.parse_args().uploads))

"""Workers that share nothing but the services, as separate hosts for real.

Four network namespaces on a private /24: a portal host (the portal, PostgreSQL and Redis, each
listening only on that host's address), two worker hosts (`edc worker` with their own data
directories and task copies, the portal's URL and the worker credential) and a participant's
host. Submissions uploaded to the portal complete on the worker hosts, whose archives came over
HTTP into their own caches.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.platform import BUNDLED_TASK, KVCACHE, quick_task, zip_of
from tests.system.multihost import netns
from tests.system.multihost.services import (
    PORTAL_PORT,
    REDIS_PORT,
    HostPostgres,
    Processes,
    edc_command,
    edc_env,
    missing_services,
    run_on,
)

pytestmark = pytest.mark.slow

WORKER_TOKEN = "multihost-worker-credential"
UPLOADS = 4
PARTICIPANT = Path(__file__).with_name("participant.py")


@dataclass
class Cluster:
    processes: Processes
    portal: netns.Host
    workers: dict[str, netns.Host]  # worker id -> its host
    worker_data: dict[str, Path]  # worker id -> its data directory
    client: netns.Host
    portal_data: Path
    portal_url: str
    portal_env: dict[str, str]


def own_task(directory: Path) -> Path:
    """The quick task with its own copy of the model and prompts (nothing shared on disk)."""
    for part in ("model", "prompts"):
        shutil.copytree(BUNDLED_TASK / part, directory / part)
    return quick_task(directory)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    reason = netns.unavailable_reason() or missing_services()
    if reason:
        pytest.skip(f"no test hosts in network namespaces here: {reason}")
    network = netns.HostNetwork()
    processes = Processes(tmp_path)
    postgres: HostPostgres | None = None
    try:
        portal = network.add_host("portal")
        workers = [network.add_host(f"worker{n}") for n in (1, 2)]
        client = network.add_host("client")

        postgres = HostPostgres(portal)
        postgres.start()
        processes.start(
            portal,
            "redis",
            ["redis-server", "--port", str(REDIS_PORT), "--bind", portal.address,
             "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", str(tmp_path)],
            edc_env(),
        )  # fmt: skip
        processes.wait_for_line("redis", "Ready to accept connections", timeout_s=20)

        portal_url = f"http://{portal.address}:{PORTAL_PORT}"
        services = {
            "database_url": postgres.url,
            "redis_url": f"redis://{portal.address}:{REDIS_PORT}/0",
            "worker_token": WORKER_TOKEN,
            "sandbox": "bwrap",
        }
        portal_data = tmp_path / "portal-host" / "data"
        portal_env = edc_env(
            **services,
            data_dir=str(portal_data),
            task_dir=str(own_task(tmp_path / "portal-host" / "task")),
            max_queued_per_user="1000",
            submissions_per_day="1000",
        )
        run_on(portal, edc_command("db", "upgrade"), portal_env)
        processes.start(
            portal,
            "portal",
            edc_command("portal", "--host", portal.address, "--port", str(PORTAL_PORT)),
            portal_env,
        )

        worker_hosts: dict[str, netns.Host] = {}
        worker_data: dict[str, Path] = {}
        for host in workers:
            root = tmp_path / f"{host.name}-host"
            worker_id = f"{network.tag}-{host.name}"
            worker_hosts[worker_id], worker_data[worker_id] = host, root / "data"
            env = edc_env(
                **services,
                data_dir=str(root / "data"),
                task_dir=str(own_task(root / "task")),
                portal_url=portal_url,
                worker_id=worker_id,
            )
            processes.start(host, host.name, edc_command("worker"), env)
        for host in workers:
            processes.wait_for_line(host.name, "Listening on", timeout_s=60)

        yield Cluster(
            processes=processes,
            portal=portal,
            workers=worker_hosts,
            worker_data=worker_data,
            client=client,
            portal_data=portal_data,
            portal_url=portal_url,
            portal_env=portal_env,
        )
    finally:
        processes.close()
        if postgres is not None:
            postgres.remove()
        network.close()


def submit_and_wait(cluster: Cluster, tmp_path: Path) -> dict[str, Any]:
    """As a participant on the client host: upload distinct kvcache zips, wait for them all."""
    output = run_on(
        cluster.portal,
        edc_command("user", "create", "participant"),
        cluster.portal_env,
    )
    token = output.strip().splitlines()[-1]
    code = KVCACHE.read_text()
    zips = []
    for n in range(UPLOADS):
        path = tmp_path / f"kvcache-{n}.zip"
        path.write_bytes(zip_of({"submission.py": f"{code}\n# upload {n}\n"}))
        zips.append(str(path))
    output = run_on(
        cluster.client,
        [sys.executable, str(PARTICIPANT), cluster.portal_url, token, "90", *zips],
        edc_env(),
        timeout_s=150,
    )
    result: dict[str, Any] = json.loads(output)
    return result


def test_submissions_complete_on_worker_hosts_that_share_only_the_services(
    cluster: Cluster, tmp_path: Path
) -> None:
    # The premise: a worker host cannot reach the machine's own PostgreSQL or Redis on loopback.
    probe = (
        "import socket\n"
        "for port in (5432, 6379):\n"
        "    try:\n"
        "        socket.create_connection(('127.0.0.1', port), timeout=2).close()\n"
        "        print('reachable', port)\n"
        "    except OSError:\n"
        "        pass\n"
    )
    for host in cluster.workers.values():
        assert run_on(host, [sys.executable, "-c", probe], edc_env()) == ""

    result = submit_and_wait(cluster, tmp_path)
    submissions = result["submissions"]
    print(f"\n{UPLOADS} submissions across 2 worker hosts: {result['seconds']} s")

    unfinished = [s for s in submissions if s["status"] != "completed"]
    assert not unfinished, f"{unfinished}\n{cluster.processes.logs()}"
    for submission in submissions:
        assert submission["result_metrics"]["correct"] is True
        assert submission["worker_id"] in cluster.workers

    used = {s["worker_id"] for s in submissions}
    assert used == set(cluster.workers), f"only {used} took work"

    for worker_id, data_dir in cluster.worker_data.items():
        ran = [s for s in submissions if s["worker_id"] == worker_id]
        cache = data_dir / "cache" / "archives"
        # Each archive it ran came over HTTP into its own cache, named by sha256; its data
        # directory holds no uploads of its own.
        assert {f"{s['sha256']}.zip" for s in ran} <= {p.name for p in cache.iterdir()}
        assert not (data_dir / "uploads").exists()
        log = cluster.processes.log(cluster.workers[worker_id].name)
        assert log.count("archive downloaded") == len(ran), log
    stored = list((cluster.portal_data / "uploads").glob("*.zip"))
    assert len(stored) == UPLOADS

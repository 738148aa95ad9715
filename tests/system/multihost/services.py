"""Processes on the test hosts: PostgreSQL, Redis and `edc` commands, each logging to a file."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.system.multihost.netns import PREFIX_LEN, SUBNET, Host, kill_tree, wait_for

POSTGRES_PORT = 5432
REDIS_PORT = 6379
PORTAL_PORT = 8000


def missing_services() -> str | None:
    """Why PostgreSQL or Redis cannot be started here, or None."""
    if not sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")):
        return "the PostgreSQL server binaries are not installed"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no `postgres` user to run PostgreSQL as"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed"
    return None


def _pg_bin(name: str) -> str:
    return str(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))[-1])


def edc_env(**settings: str) -> dict[str, str]:
    """This process's environment without its EDC_ settings, plus ``settings`` as EDC_ vars."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDC_")}
    env.update({f"EDC_{k.upper()}": v for k, v in settings.items()})
    return env


class Processes:
    """Every long-running process the test starts on its hosts; :meth:`close` kills them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._started: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, host: Host, name: str, argv: list[str], env: dict[str, str]) -> None:
        # A file, not a pipe: nobody reads a pipe while the test runs, and a full one blocks.
        with self.log_path(name).open("wb") as log:
            self._started[name] = subprocess.Popen(
                host.command(argv),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def log(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        """Every log, for a failure message."""
        return "\n".join(
            f"----- {path.name} -----\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.log_dir.glob("*.log"))
        )

    def wait_for_line(self, name: str, text: str, *, timeout_s: float) -> None:
        process = self._started[name]

        def seen() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}")
            return text in self.log(name)

        try:
            wait_for(seen, timeout_s=timeout_s, what=f"{text!r} in {name}'s log")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from exc

    def close(self) -> None:
        while self._started:
            kill_tree(self._started.popitem()[1])


def run_on(host: Host, argv: list[str], env: dict[str, str], *, timeout_s: float = 60) -> str:
    """Run a command to its end on ``host``; returns its stdout, fails with its output."""
    done = subprocess.run(
        host.command(argv), env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert done.returncode == 0, f"{argv} on {host.name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def edc_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "edc", *args]


class HostPostgres:
    """A private PostgreSQL server listening only on a test host's address."""

    def __init__(self, host: Host) -> None:
        self.host = host
        # Not under pytest's tmp_path: the postgres user must be able to reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="edc-mh-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self._as_postgres(
            [_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"]
        )
        # The hosts connect over the test's /24; initdb only trusts loopback.
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {SUBNET}.0/{PREFIX_LEN} trust\n")
        self.url = f"postgresql+psycopg://postgres@{host.address}:{POSTGRES_PORT}/postgres"

    def _as_postgres(self, argv: list[str], *, host: Host | None = None) -> None:
        command = ["runuser", "-u", "postgres", "--", *argv]
        if host is not None:
            command = host.command(command)
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = (
            f"-p {POSTGRES_PORT} -k {self.dir} -c listen_addresses={self.host.address} -c fsync=off"
        )
        self._as_postgres(
            [_pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"),
             "-w", "start"],
            host=self.host,
        )  # fmt: skip

    def remove(self) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", _pg_bin("pg_ctl"), "-D", str(self.data),
             "-m", "immediate", "-w", "stop"],
            capture_output=True,
            check=False,
            timeout=60,
        )  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)

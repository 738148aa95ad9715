"""Test hosts as network namespaces on one machine, joined by a switch of their own.

Each host is a namespace made with ``ip netns add`` and wired with a veth pair to a bridge in a
separate "lan" namespace. Addresses come from a /24 that exists only on those veths, so the hosts
reach each other and nothing else: the machine's own loopback (with its PostgreSQL and Redis) is
not theirs, and no address of the machine's own namespace is touched.

Processes join a host with ``nsenter --net``, not ``ip netns exec``: the latter also remounts
``/sys``, which hides the cgroup hierarchies the worker's sandbox limits live in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

SUBNET = "10.213.0"
PREFIX_LEN = 24
NETNS_DIR = Path("/run/netns")


class NamespacesUnavailable(Exception):
    """This machine (or this user) cannot make network namespaces."""


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian: apt-get install iproute2 util-linux)"
    probe = f"edc-probe-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise NamespacesUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass(frozen=True)
class Host:
    name: str  # a short role, e.g. "portal"
    namespace: str
    address: str

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run on this host (its network namespace, everything else shared)."""
        return ["nsenter", f"--net={NETNS_DIR / self.namespace}", "--", *argv]


class HostNetwork:
    """Hosts on one private /24; :meth:`close` kills whatever runs in them and removes them."""

    def __init__(self) -> None:
        self.tag = f"edcmh{os.getpid() % 100000}{uuid.uuid4().hex[:3]}"
        self.lan = f"{self.tag}-lan"
        self.hosts: list[Host] = []
        self._namespaces: list[str] = []
        self._add_namespace(self.lan)
        _ip("-n", self.lan, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.lan, "link", "set", "br0", "up")

    def _add_namespace(self, namespace: str) -> None:
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")

    def add_host(self, name: str) -> Host:
        host = Host(
            name=name,
            namespace=f"{self.tag}-{name}",
            address=f"{SUBNET}.{len(self.hosts) + 1}",
        )
        self._add_namespace(host.namespace)
        # Both ends are created inside namespaces: nothing appears in the machine's own.
        port = f"p{len(self.hosts) + 1}"
        _ip("-n", self.lan, "link", "add", port, "type", "veth", "peer", "name", "eth0",
            "netns", host.namespace)  # fmt: skip
        _ip("-n", self.lan, "link", "set", port, "master", "br0")
        _ip("-n", self.lan, "link", "set", port, "up")
        _ip("-n", host.namespace, "addr", "add", f"{host.address}/{PREFIX_LEN}", "dev", "eth0")
        _ip("-n", host.namespace, "link", "set", "eth0", "up")
        self.hosts.append(host)
        return host

    def pids(self, namespace: str) -> list[int]:
        done = subprocess.run(
            ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in done.stdout.split()]

    def close(self) -> None:
        """Kill every process still in the hosts (all started by the test), then remove them."""
        for namespace in self._namespaces:
            kill_all(self.pids(namespace))
        for namespace in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
        self._namespaces.clear()


def kill_all(pids: list[int], *, timeout_s: float = 10.0) -> None:
    processes = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            process.send_signal(signal.SIGKILL)
            processes.append(process)
    psutil.wait_procs(processes, timeout=timeout_s)


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process the test started and everything below it; reap it."""
    if process.poll() is None:
        with contextlib.suppress(psutil.NoSuchProcess):
            children = psutil.Process(process.pid).children(recursive=True)
            kill_all([process.pid, *(child.pid for child in children)])
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def wait_for(predicate: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    """Poll ``predicate`` until true; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)

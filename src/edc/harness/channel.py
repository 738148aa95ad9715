"""The harness's end of the protocol channel: a unix socket in a directory mounted into the sandbox.

The socket file lives in a host directory that every backend mounts at ``CHANNEL_DIR``, so the
submission connects to ``/run/edc/edc.sock`` whatever the isolation. The harness does all its I/O
non-blocking through one selector: it never blocks on a submission that stops reading, and it stamps
every read with ``time.monotonic_ns()`` the moment the bytes are in hand.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from collections.abc import Callable
from pathlib import Path

from edc.errors import RunFailed
from edc.status import FailureReason

SOCKET_NAME = "edc.sock"
_READ_SIZE = 256 * 1024
# sockaddr_un holds 108 bytes; longer paths are bound through a short /proc/self/fd alias.
_MAX_SUN_PATH = 100


class ChannelClosed(Exception):
    """The submission's end of the channel went away."""


class Listener:
    """Listens on ``directory/edc.sock`` for the one connection of one run."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / SOCKET_NAME
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            _bind(self._sock, self.path)
            # Any uid inside the sandbox (docker runs as nobody) may connect.
            os.chmod(self.path, 0o777)
            self._sock.listen(1)
            self._sock.setblocking(False)
        except OSError as exc:
            self._sock.close()
            raise RunFailed(
                FailureReason.INFRASTRUCTURE,
                f"The harness could not open its channel socket at {self.path}: {exc}.",
            ) from exc

    def accept(self, *, deadline_ns: int, still_running: Callable[[], bool]) -> Channel | None:
        """The connection, or None when the deadline passed or the process ended first."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            while True:
                left_ns = deadline_ns - time.monotonic_ns()
                if left_ns <= 0:
                    return None
                if selector.select(min(left_ns / 1e9, 0.05)):
                    try:
                        conn, _ = self._sock.accept()
                    except BlockingIOError:
                        continue
                    return Channel(conn)
                if not still_running():
                    return None

    def close(self) -> None:
        self._sock.close()
        self.path.unlink(missing_ok=True)


def _bind(sock: socket.socket, path: Path) -> None:
    if len(os.fsencode(path)) <= _MAX_SUN_PATH:
        sock.bind(os.fspath(path))
        return
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sock.bind(f"/proc/self/fd/{dir_fd}/{path.name}")
    finally:
        os.close(dir_fd)


class Channel:
    """One connected, non-blocking stream: queued writes, stamped reads."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._outbox = bytearray()
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ)
        self._writing = False

    def send(self, data: bytes) -> None:
        """Write now as far as the socket takes it; the rest goes out while receiving."""
        self._outbox += data
        self._flush()

    def receive(self, timeout_s: float, max_bytes: int = _READ_SIZE) -> tuple[int, bytes]:
        """At most ``max_bytes`` and their arrival stamp, or ``(now, b"")`` after ``timeout_s``
        of silence."""
        deadline = time.monotonic_ns() + int(timeout_s * 1e9)
        while True:
            left = (deadline - time.monotonic_ns()) / 1e9
            if left <= 0:
                return time.monotonic_ns(), b""
            for _key, events in self._selector.select(left):
                if events & selectors.EVENT_WRITE:
                    self._flush()
                if events & selectors.EVENT_READ:
                    try:
                        data = self._sock.recv(max_bytes)
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        raise ChannelClosed(str(exc)) from exc
                    stamp = time.monotonic_ns()
                    if not data:
                        raise ChannelClosed("end of stream")
                    return stamp, data

    def _flush(self) -> None:
        while self._outbox:
            try:
                sent = self._sock.send(self._outbox)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                    raise ChannelClosed(str(exc)) from exc
                raise
            del self._outbox[:sent]
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._outbox else 0)
        if bool(self._outbox) != self._writing:
            self._selector.modify(self._sock, want)
            self._writing = bool(self._outbox)

    def close(self) -> None:
        self._selector.close()
        self._sock.close()

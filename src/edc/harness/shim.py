"""Speaks the decode protocol for a Python submission. Runs INSIDE the sandbox.

The harness copies this file into the channel directory and starts it with the sandbox's Python; it
must only need the standard library (the submission brings numpy or whatever else it imports). It
connects to the channel socket, imports ``/submission/submission.py``, builds its ``Decoder`` once
with the model directory, and then calls ``Decoder.step(pending)`` over and over: each call gets
every request still in flight (new ones join between calls) and yields ``(request_id, tokens)``
pairs, which are sent at once as chunks. When a request has all its tokens the shim says ``done``.

The shim forwards what the decoder yields without judging it: the harness, outside the sandbox,
is the one that checks ids, counts and vocabulary.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import Any

SOCKET_ENV = "EDC_SOCKET"
DEFAULT_SOCKET = "/run/edc/edc.sock"
SUBMISSION_MODULE = "submission"
DECODER_CLASS = "Decoder"

Send = Callable[[dict[str, Any]], None]


class Request:
    """One request in flight, as the decoder sees it; the shim keeps ``generated`` up to date."""

    __slots__ = ("generated", "id", "max_new_tokens", "prompt", "sampling")

    def __init__(self, message: dict[str, Any]) -> None:
        self.id: str = message["id"]
        self.prompt: list[int] = message["prompt"]
        self.max_new_tokens: int = message["max_new_tokens"]
        self.sampling: dict[str, Any] = message.get("sampling", {})
        self.generated: list[int] = []

    @property
    def remaining(self) -> int:
        return self.max_new_tokens - len(self.generated)

    def __repr__(self) -> str:
        return (
            f"Request(id={self.id!r}, prompt=<{len(self.prompt)} tokens>, {self.remaining} to go)"
        )


def _plain(value: Any) -> Any:
    # numpy integers → int; anything else goes as is and the harness judges it.
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _token_list(tokens: Any) -> list[Any]:
    if isinstance(tokens, int) or (hasattr(tokens, "item") and not hasattr(tokens, "__len__")):
        return [_plain(tokens)]
    return [_plain(t) for t in tokens]


class Inbox:
    """Messages from the harness, read on the decoding thread itself.

    No reader thread: a thread handing requests over costs tens of microseconds of TTFT and
    competes for the GIL while the decoder runs. Instead the socket is polled between ``step``
    calls and waited on only when nothing is pending.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self.closed = False

    def take(self, *, wait: bool) -> list[dict[str, Any]]:
        """Every complete message available now; with ``wait``, at least one (or closed)."""
        while not self.closed:
            ready, _, _ = select.select([self._sock], [], [], None if wait else 0)
            if not ready:
                break
            data = self._sock.recv(1 << 16)
            if not data:
                self.closed = True
                break
            self._buffer += data
            if wait and b"\n" in data:
                break
        lines = self._buffer.split(b"\n")
        self._buffer = lines.pop()
        return [json.loads(line) for line in lines if line.strip()]


def _serve(decoder: Any, inbox: Inbox, send: Send) -> None:
    pending: dict[str, Request] = {}
    while True:
        for message in inbox.take(wait=not pending):
            if message.get("op") == "shutdown":
                return
            if message.get("op") == "generate":
                pending[message["id"]] = Request(message)
        if inbox.closed:
            return
        if not pending:
            continue
        produced: Iterable[tuple[str, Any]] = decoder.step(list(pending.values()))
        for request_id, tokens in produced:
            out: dict[str, Any] = {"id": request_id, "tokens": _token_list(tokens)}
            request = pending.get(request_id)
            if request is not None:
                request.generated.extend(out["tokens"])
                if len(request.generated) >= request.max_new_tokens:
                    out["done"] = True
                    del pending[request_id]
            send(out)


def _kind(exc: Exception) -> str:
    # numpy's allocation failure is a private subclass; the harness looks for "MemoryError".
    return "MemoryError" if isinstance(exc, MemoryError) else type(exc).__name__


def _connect() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ.get(SOCKET_ENV, DEFAULT_SOCKET))
    return sock


def main() -> int:
    sock = _connect()

    def send(obj: dict[str, Any]) -> None:
        sock.sendall((json.dumps(obj, separators=(",", ":"), default=str) + "\n").encode())

    inbox = Inbox(sock)
    try:
        first = inbox.take(wait=True)
        while not first and not inbox.closed:
            first = inbox.take(wait=True)
        if not first or first[0].get("op") != "load":
            return 0  # the harness went away before loading
        load = first[0]
        # Every backend starts the shim in the submission's folder (/submission in a sandbox).
        sys.path.insert(0, os.getcwd())
        module = __import__(SUBMISSION_MODULE)
        decoder_class = getattr(module, DECODER_CLASS, None)
        if decoder_class is None:
            raise AttributeError(f"submission.py defines no class named {DECODER_CLASS!r}")
        decoder = decoder_class(load["model_dir"])
        send({"op": "ready"})
        _serve(decoder, inbox, send)
        close = getattr(decoder, "close", None)
        if callable(close):
            close()
        return 0
    except Exception as exc:
        traceback.print_exc()
        with contextlib.suppress(OSError):
            send({"op": "error", "message": f"{_kind(exc)}: {exc}"})
        return 1


if __name__ == "__main__":
    sys.exit(main())

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
import queue
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from typing import Any

SOCKET_ENV = "EDC_SOCKET"
DEFAULT_SOCKET = "/run/edc/edc.sock"
SUBMISSION_DIR = "/submission"
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


def _read_requests(reader: Any, inbox: queue.SimpleQueue[dict[str, Any] | None]) -> None:
    for line in reader:
        if line.strip():
            inbox.put(json.loads(line))
    inbox.put(None)  # the harness closed the channel


def _serve(decoder: Any, inbox: queue.SimpleQueue[dict[str, Any] | None], send: Send) -> None:
    pending: dict[str, Request] = {}

    def take(message: dict[str, Any] | None) -> bool:
        if message is None or message.get("op") == "shutdown":
            return False
        if message.get("op") == "generate":
            pending[message["id"]] = Request(message)
        return True

    while True:
        if not pending and not take(inbox.get()):
            return
        while True:
            try:
                message = inbox.get_nowait()
            except queue.Empty:
                break
            if not take(message):
                return
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


def _connect() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ.get(SOCKET_ENV, DEFAULT_SOCKET))
    return sock


def main() -> int:
    sock = _connect()
    lock = threading.Lock()

    def send(obj: dict[str, Any]) -> None:
        data = (json.dumps(obj, separators=(",", ":"), default=str) + "\n").encode()
        with lock:
            sock.sendall(data)

    reader = sock.makefile("rb")
    try:
        load = json.loads(reader.readline() or b"null")
        if not isinstance(load, dict) or load.get("op") != "load":
            return 0  # the harness went away before loading
        sys.path.insert(0, SUBMISSION_DIR)
        module = __import__(SUBMISSION_MODULE)
        decoder_class = getattr(module, DECODER_CLASS, None)
        if decoder_class is None:
            raise AttributeError(f"submission.py defines no class named {DECODER_CLASS!r}")
        decoder = decoder_class(load["model_dir"])
        send({"op": "ready"})
        inbox: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        threading.Thread(target=_read_requests, args=(reader, inbox), daemon=True).start()
        _serve(decoder, inbox, send)
        close = getattr(decoder, "close", None)
        if callable(close):
            close()
        return 0
    except Exception as exc:
        traceback.print_exc()
        with contextlib.suppress(OSError):
            send({"op": "error", "message": f"{type(exc).__name__}: {exc}"})
        return 1


if __name__ == "__main__":
    sys.exit(main())

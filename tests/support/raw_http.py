"""HTTP spoken by hand over a socket, for tests of what a client sends slowly, partly or wrongly
(a body cut off, trickled, or too large): the portal on a live server and one answer read back."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass

from edc.config import Settings


@dataclass
class Portal:
    """A portal served in a thread, and a participant's API token on it."""

    port: int
    settings: Settings
    token: str
    user_id: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, object]]:
    """One response: status, headers (lower-cased names) and JSON body; the connection may close
    after it (the rest of the request's body is unread)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the response body"
        body += chunk
    return int(status_line.split(" ", 2)[1]), headers, json.loads(body[:length])

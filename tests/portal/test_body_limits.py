"""Request bodies other than uploads are capped and paced, over real HTTP against uvicorn.

A body announced over ``EDC_MAX_FORM_BYTES`` is refused (413) while most of it was never sent:
the portal answers without reading it. A chunked body, or a multipart log-in carrying a file, is
refused the moment it passes the cap; one that trickles is cut off (408) at the upload pace. The
refusals carry the security headers. Log-ins, uploads bigger than the cap and event streams that
outlive the pace are untouched.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx
import pytest
from fastapi.responses import StreamingResponse

from edc.config import Settings
from edc.portal.app import create_app
from edc.portal.security_headers import POLICY
from tests.support.competition import PASSWORD, bearer, csrf_from, make_user, zip_of
from tests.support.databases import postgres_only
from tests.support.raw_http import Portal, read_response
from tests.support.threaded_server import serve_in_thread

pytestmark = postgres_only

CAP = 16 * 1024
ANSWER_TIMEOUT_S = 20.0


@pytest.fixture
def limits(settings: Settings) -> Settings:
    """A 16 KiB cap; bodies at 1 KiB/s at least after a 0.5 s grace, no pause over 1 s."""
    return settings.model_copy(
        update={
            "max_form_bytes": CAP,
            "upload_min_bytes_per_s": 1024,
            "upload_grace_s": 0.5,
            "upload_idle_timeout_s": 1.0,
        }
    )


@pytest.fixture
def portal(limits: Settings) -> Iterator[Portal]:
    token = make_user(limits, "alice")[1]
    with serve_in_thread(create_app(limits)) as port:
        yield Portal(port=port, settings=limits, token=token)


def connect(portal: Portal, request_line: bytes, headers: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", portal.port), timeout=ANSWER_TIMEOUT_S)
    sock.sendall(request_line + b"\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n")
    return sock


def assert_refused(answer: tuple[int, dict[str, str], dict[str, object]], status: int) -> str:
    code, headers, body = answer
    assert code == status, body
    assert body["code"] == {413: "too_large", 408: "too_slow"}[status]
    # The refusal comes from outside the routes, and still carries the security headers.
    assert headers["content-security-policy"] == POLICY
    assert headers["x-frame-options"] == "DENY"
    assert headers["connection"] == "close"
    return str(body["detail"])


def test_an_oversized_json_body_is_refused_before_it_is_read(portal: Portal) -> None:
    sock = connect(
        portal,
        b"POST /api/v1/tokens HTTP/1.1",
        b"Content-Type: application/json\r\nContent-Length: 50000000\r\n",
    )
    with sock:
        sock.sendall(b'{"name": "alice", "password": "' + b"x" * 1000)  # 1 KB of the 50 MB
        detail = assert_refused(read_response(sock), 413)
    assert detail == "The request body is larger than the limit of 16 KiB."


def test_a_chunked_body_is_refused_when_it_passes_the_cap(portal: Portal) -> None:
    sock = connect(
        portal,
        b"POST /api/v1/tokens HTTP/1.1",
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
    )
    piece = b"x" * 1024
    with sock:
        sock.sendall(b'1f\r\n{"name": "alice", "password": "\r\n')
        for _ in range(CAP // len(piece) + 1):  # past the cap, and the body never ends
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        assert_refused(read_response(sock), 413)


def test_a_multipart_log_in_with_a_big_file_part_is_refused(portal: Portal) -> None:
    with httpx.Client(base_url=portal.url, timeout=ANSWER_TIMEOUT_S) as browser:
        token = csrf_from(browser.get("/login").text)
        form = {"csrf_token": token, "name": "alice", "password": PASSWORD}
        big = {"file": ("junk.bin", b"\0" * (4 * CAP), "application/octet-stream")}
        refused = browser.post("/login", data=form, files=big)
        assert refused.status_code == 413
        assert refused.json()["code"] == "too_large"
        assert refused.headers["content-security-policy"] == POLICY
        # Nobody was logged in by it.
        assert browser.get("/api/v1/me").status_code == 401


def test_a_trickling_body_is_cut_off_at_the_pace(portal: Portal) -> None:
    sock = connect(
        portal,
        b"POST /login HTTP/1.1",
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n",
    )
    stop = threading.Event()

    def trickle() -> None:  # a byte every 0.3 s: behind the pace once the grace is over
        while not stop.wait(0.3):
            try:
                sock.sendall(b"x")
            except OSError:
                return

    began = time.monotonic()
    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        with sock:
            detail = assert_refused(read_response(sock), 408)
    finally:
        stop.set()
        sender.join(timeout=5)
    waited = time.monotonic() - began
    settings = portal.settings
    assert settings.upload_grace_s <= waited < settings.upload_grace_s + 3.0
    assert detail.startswith("The request body was too slow and was cut off after ")
    assert "at least 1 KiB/s, with no pause over 1 s" in detail


def test_log_ins_still_work(portal: Portal) -> None:
    with httpx.Client(base_url=portal.url, timeout=ANSWER_TIMEOUT_S) as browser:
        token = csrf_from(browser.get("/login").text)
        form = {"csrf_token": token, "name": "alice", "password": PASSWORD, "next": "/"}
        assert browser.post("/login", data=form).status_code == 303
        assert browser.get("/api/v1/me").json()["user"]["name"] == "alice"
    issued = httpx.post(f"{portal.url}/api/v1/tokens", json={"name": "alice", "password": PASSWORD})
    assert issued.status_code == 201


def test_uploads_bigger_than_the_cap_are_still_accepted(portal: Portal) -> None:
    # Random text does not compress: the archive itself is over the cap, within the upload limit.
    files = {"submission.py": "class Decoder:\n    pass\n", "pad.txt": secrets.token_hex(2 * CAP)}
    data = zip_of(files)
    assert CAP * 2 < len(data) < portal.settings.max_upload_bytes
    upload = {"file": ("s.zip", data, "application/zip")}
    with httpx.Client(base_url=portal.url, timeout=ANSWER_TIMEOUT_S) as client:
        api = client.post("/api/v1/submissions", files=upload, headers=bearer(portal.token))
        assert api.status_code == 201, api.text
        # And the page's upload form.
        token = csrf_from(client.get("/login").text)
        form = {"csrf_token": token, "name": "alice", "password": PASSWORD, "next": "/"}
        assert client.post("/login", data=form).status_code == 303
        token = csrf_from(client.get("/").text)
        page = client.post("/submit", data={"csrf_token": token}, files=upload)
        assert page.status_code == 303, page.text


def test_an_answer_that_outlives_the_pace_is_not_cut(limits: Settings) -> None:
    # Once the (empty) body is in, the server's receive only waits for the client to leave, as
    # under an event stream: the pace no longer applies.
    async def pieces() -> AsyncIterator[bytes]:
        yield b"first "
        await anyio.sleep(2 * limits.upload_idle_timeout_s)
        yield b"last"

    async def slow_stream() -> StreamingResponse:
        return StreamingResponse(pieces())

    app = create_app(limits)
    app.add_api_route("/test-only/slow-stream", slow_stream)
    with serve_in_thread(app) as port:
        answer = httpx.get(f"http://127.0.0.1:{port}/test-only/slow-stream", timeout=10)
    assert answer.status_code == 200
    assert answer.text == "first last"

"""Over-limit and too-slow uploads against a real uvicorn server, over a raw socket.

Each client sends only part of a body it announces as larger, then waits: the 413 must arrive
while the rest was never sent, proving the portal refuses without reading the whole body. A body
sent a byte at a time, or that stops, is cut off (408) and leaves nothing behind. A participant's
uploads in progress are capped: one over is refused (429) before its body, and an upload gives
its slot back however it ends.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis
from fastapi import FastAPI

from edc.config import Settings
from edc.portal.app import create_app
from edc.portal.upload_slots import UploadSlots, slots_key
from tests.support.competition import bearer, make_user, zip_of
from tests.support.databases import postgres_only
from tests.support.raw_http import Portal, read_response
from tests.support.threaded_server import serve_in_thread

pytestmark = pytest.mark.slow

BOUNDARY = b"edc-test-boundary"
PART_HEAD = (
    b"--" + BOUNDARY + b"\r\n"
    b'Content-Disposition: form-data; name="file"; filename="big.zip"\r\n'
    b"Content-Type: application/zip\r\n\r\n"
)
ANSWER_TIMEOUT_S = 20.0


@pytest.fixture
def portal(settings: Settings) -> Iterator[Portal]:
    limited = settings.model_copy(update={"max_upload_mb": 1})
    with serve_in_thread(create_app(limited)) as port:
        yield Portal(port=port, settings=limited, token=make_user(limited, "streamer")[1])


def send_headers(portal: Portal, extra: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", portal.port), timeout=ANSWER_TIMEOUT_S)
    sock.sendall(
        b"POST /api/v1/submissions HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n"
        b"Authorization: Bearer " + portal.token.encode() + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=" + BOUNDARY + b"\r\n" + extra + b"\r\n"
    )
    return sock


def answer(sock: socket.socket) -> tuple[int, dict[str, object]]:
    """The response's status and JSON body; the connection is closed either way."""
    try:
        status, _, body = read_response(sock)
    finally:
        sock.close()
    return status, body


def assert_too_large(portal: Portal, sock: socket.socket) -> None:
    status, body = answer(sock)
    assert status == 413
    assert body == {"detail": "The upload is larger than the limit of 1 MB.", "code": "too_large"}
    assert [p.name for p in portal.settings.uploads_dir.iterdir()] == []


def test_refused_by_content_length_before_the_body(portal: Portal) -> None:
    sock = send_headers(portal, b"Content-Length: 10000000000\r\n")
    sock.sendall(PART_HEAD + b"PK\x03\x04" + bytes(1000))  # 1 KB of the announced 10 GB
    assert_too_large(portal, sock)


def test_refused_while_streaming_a_chunked_body(portal: Portal) -> None:
    sock = send_headers(portal, b"Transfer-Encoding: chunked\r\n")
    piece = bytes(64 * 1024)
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    sock.sendall(f"{len(PART_HEAD):x}\r\n".encode() + PART_HEAD + b"\r\n")
    for _ in range(17):  # 1 MB and one piece: over the limit, and the body never ends
        sock.sendall(chunk)
    assert_too_large(portal, sock)


def test_refused_while_streaming_when_the_length_looks_acceptable(portal: Portal) -> None:
    # Announced within the limit plus multipart overhead, but the file part alone passes 1 MB.
    limit = portal.settings.max_upload_bytes
    sock = send_headers(portal, f"Content-Length: {limit + 60_000}\r\n".encode())
    sock.sendall(PART_HEAD + bytes(limit + 1024))
    assert_too_large(portal, sock)


@pytest.fixture
def paced(settings: Settings) -> Iterator[Portal]:
    """A portal that wants at least 4 KiB/s after a 1 s grace, and no pause over 2 s."""
    s = settings.model_copy(
        update={"upload_min_bytes_per_s": 4096, "upload_grace_s": 1.0, "upload_idle_timeout_s": 2.0}
    )
    with serve_in_thread(create_app(s)) as port:
        yield Portal(port=port, settings=s, token=make_user(s, "trickler")[1])


def assert_cut_off(portal: Portal, sock: socket.socket, began: float) -> None:
    status, body = answer(sock)
    assert status == 408, body
    assert body["code"] == "too_slow"
    assert "at least 4 KiB/s" in str(body["detail"])
    assert time.monotonic() - began < ANSWER_TIMEOUT_S
    assert [p.name for p in portal.settings.uploads_dir.iterdir()] == []


@postgres_only
def test_a_body_trickling_in_is_cut_off(paced: Portal) -> None:
    began = time.monotonic()
    sock = send_headers(paced, b"Content-Length: 100000\r\n")
    sock.sendall(PART_HEAD)
    try:
        for _ in range(40):  # a byte every 0.1 s: 10 B/s, far under the minimum
            sock.sendall(b"x")
            time.sleep(0.1)
    except OSError:
        pass  # the portal may close the connection once it has answered
    assert_cut_off(paced, sock, began)


@postgres_only
def test_a_body_that_stops_is_cut_off_after_the_idle_timeout(paced: Portal) -> None:
    began = time.monotonic()
    sock = send_headers(paced, b"Content-Length: 100000\r\n")
    sock.sendall(PART_HEAD + bytes(20_000))  # fast enough, then silence
    assert_cut_off(paced, sock, began)
    assert time.monotonic() - began >= paced.settings.upload_idle_timeout_s


def test_after_a_slow_upload_is_cut_the_participant_can_upload_again(paced: Portal) -> None:
    sock = send_headers(paced, b"Content-Length: 100000\r\n")
    sock.sendall(PART_HEAD)
    assert_cut_off(paced, sock, time.monotonic())
    response = httpx.post(
        f"http://127.0.0.1:{paced.port}/api/v1/submissions",
        files={"file": ("s.zip", zip_of(), "application/zip")},
        headers=bearer(paced.token),
        timeout=30,
    )
    assert response.status_code == 201, response.text


@contextmanager
def capped_portal(settings: Settings, **overrides: object) -> Iterator[tuple[Portal, FastAPI]]:
    """A portal where a participant may have one upload in progress, paced as ``paced``."""
    s = settings.model_copy(
        update={
            "upload_min_bytes_per_s": 4096,
            "upload_grace_s": 1.0,
            "upload_idle_timeout_s": 2.0,
            "uploads_in_flight_per_user": 1,
            **overrides,
        }
    )
    app = create_app(s)
    user_id, token = make_user(s, "uploader")
    with serve_in_thread(app) as port:
        yield Portal(port=port, settings=s, token=token, user_id=user_id), app


def uploads_in_flight(portal: Portal, app: FastAPI) -> int:
    """As the portal counts them: in Redis, or in the process when there is none."""
    if portal.settings.redis_url is None:
        slots: UploadSlots = app.state.upload_slots
        return slots._local[portal.user_id]
    conn = redis.Redis.from_url(portal.settings.redis_url)
    try:
        return int(conn.zcard(slots_key(portal.settings, portal.user_id)))
    finally:
        conn.close()


def wait_for(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


@pytest.mark.parametrize("queue", ["redis", "no redis"])
def test_an_upload_over_the_cap_is_refused_before_its_body_and_a_cut_one_frees_its_slot(
    settings: Settings, queue: str
) -> None:
    overrides = {"redis_url": None} if queue == "no redis" else {}
    with capped_portal(settings, **overrides) as (portal, app):
        began = time.monotonic()
        slow = send_headers(portal, b"Content-Length: 100000\r\n")
        slow.sendall(PART_HEAD)  # then nothing: it will be cut off
        wait_for(lambda: uploads_in_flight(portal, app) == 1)
        second = send_headers(portal, b"Content-Length: 100000\r\n")  # not a byte of body
        status, body = answer(second)
        assert status == 429, body
        assert "1 upload in progress" in str(body["detail"])
        assert_cut_off(portal, slow, began)
        wait_for(lambda: uploads_in_flight(portal, app) == 0)
        response = httpx.post(
            f"http://127.0.0.1:{portal.port}/api/v1/submissions",
            files={"file": ("s.zip", zip_of(), "application/zip")},
            headers=bearer(portal.token),
            timeout=30,
        )
        assert response.status_code == 201, response.text
        assert uploads_in_flight(portal, app) == 0


def test_an_upload_whose_client_went_away_gives_its_slot_back(settings: Settings) -> None:
    with capped_portal(settings, upload_grace_s=60.0, upload_idle_timeout_s=60.0) as (portal, app):
        sock = send_headers(portal, b"Content-Length: 100000\r\n")
        sock.sendall(PART_HEAD + bytes(1000))
        wait_for(lambda: uploads_in_flight(portal, app) == 1)
        sock.close()  # long before the pace would cut it
        wait_for(lambda: uploads_in_flight(portal, app) == 0)


def test_a_large_upload_past_the_limits_is_refused_before_its_body(settings: Settings) -> None:
    # A participant at the daily limit announces 50 MB: refused (429) with the body unsent, and so
    # is a chunked body of unknown length. A small upload is refused alike; nothing is kept.
    limited = settings.model_copy(update={"submissions_per_day": 1, "max_upload_mb": 100})
    with serve_in_thread(create_app(limited)) as port:
        portal = Portal(port=port, settings=limited, token=make_user(limited, "eager")[1])
        url = f"http://127.0.0.1:{port}/api/v1/submissions"

        def small_upload() -> httpx.Response:
            files = {"file": ("s.zip", zip_of(), "application/zip")}
            return httpx.post(url, files=files, headers=bearer(portal.token), timeout=30)

        assert small_upload().status_code == 201
        kept = sorted(p.name for p in limited.uploads_dir.iterdir())
        sock = send_headers(portal, f"Content-Length: {50 * 1024 * 1024}\r\n".encode())
        sock.sendall(PART_HEAD + b"PK\x03\x04" + bytes(1000))  # 1 KB of the announced 50 MB
        status, body = answer(sock)
        assert status == 429, body
        assert "all 1 submissions" in str(body["detail"])
        chunked = send_headers(portal, b"Transfer-Encoding: chunked\r\n")
        chunked.sendall(f"{len(PART_HEAD):x}\r\n".encode() + PART_HEAD + b"\r\n")  # never ends
        assert answer(chunked) == (429, body)
        refused = small_upload()
        assert refused.status_code == 429, refused.text
        assert refused.json()["detail"] == body["detail"]
        assert sorted(p.name for p in limited.uploads_dir.iterdir()) == kept

"""File-serving routes resist path traversal, sent as raw request targets to a real uvicorn server.

The static files and both archive downloads (the participant's and the workers') are asked for
files outside their roots: the portal's own source, the data directory (the database, another
participant's archive, a planted secret) and ``/etc/passwd``, with every usual disguise: plain and
percent-encoded dot segments, encoded and backslash separators, double encoding, overlong UTF-8,
absolute paths, and a NUL byte. No answer may hold any of those files' contents, nor be a 5xx; a
200 may only ever be one of the static files themselves.
"""

from __future__ import annotations

import http.client
import os
from pathlib import Path

import pytest

from edc.portal.app import STATIC_DIR
from edc.portal.deps import MAX_ROW_ID
from tests.portal.security.conftest import BOBS_SECRET, WORKER_TOKEN, LiveServer, People
from tests.support.competition import bearer

# A real server, so the request targets are parsed as in production.
pytestmark = pytest.mark.slow

PORTAL_SOURCE = STATIC_DIR.parent / "app.py"
PASSWD = Path("/etc/passwd")
DATA_SECRET = "planted-in-the-data-dir-5be1"


def disguises(relative: str) -> list[str]:
    """``relative`` (a path with ``../`` segments) written the ways attackers write it."""
    segments = relative.split("/")

    def joined(dots: str, slash: str) -> str:
        return slash.join(dots if s == ".." else s for s in segments)

    return [
        relative,
        joined("%2e%2e", "/"),
        joined("%2E%2E", "%2F"),
        joined("..", "%2f"),
        joined(".%2e", "/"),
        joined("%252e%252e", "%252f"),
        joined("..", "%5c"),
        joined("..", "\\"),
        joined("%c0%ae%c0%ae", "/"),
        joined("%c0%ae%c0%ae", "%c0%af"),
        joined("....", "//"),
        joined("..;", "/"),
        joined("%2e%2e", "/") + "%00.css",
    ]


def targets(live: LiveServer, people: People) -> list[str]:
    data = live.settings.data_dir
    secret = data / "secret.txt"
    secret.write_text(DATA_SECRET)
    bobs_archive = next(
        p for p in live.settings.uploads_dir.iterdir() if BOBS_SECRET.encode() in p.read_bytes()
    )
    relatives = [
        os.path.relpath(PORTAL_SOURCE, STATIC_DIR),
        os.path.relpath(secret, STATIC_DIR),
        os.path.relpath(bobs_archive, STATIC_DIR),
        "../" * 12 + "etc/passwd",
        "vendor/../../app.py",
    ]
    found = [f"/static/{form}" for rel in relatives for form in disguises(rel)]
    for absolute in (str(PASSWD), str(secret), str(bobs_archive)):
        found += [
            f"/static/{absolute}",
            f"/static/{absolute.replace('/', '%2f')}",
            f"/static/{absolute.replace('/', '%252f')}",
            f"/static/%2f{absolute}",
        ]
    # The archive routes take an integer id; the path around it is attacked instead.
    own = people.alice.submissions
    any_id = str(next(iter(own.values())))
    for route in ("/api/v1/submissions/{}/archive", "/internal/v1/submissions/{}/archive"):
        for form in disguises("../" * 6 + "etc/passwd"):
            found.append(route.format(form))
            found.append(route.format(any_id) + "/" + form)
            found.append(route.format(f"{any_id}%2f{form}"))
        found.append(route.format(str(MAX_ROW_ID)) + "/..%2f..%2f" + any_id)
    return found


def fetch(live: LiveServer, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """One request with ``target`` sent exactly as written (no client-side normalising)."""
    connection = http.client.HTTPConnection(live.host, live.port, timeout=10)
    try:
        connection.putrequest("GET", target, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def static_files() -> set[bytes]:
    return {p.read_bytes() for p in STATIC_DIR.rglob("*") if p.is_file()}


def test_file_routes_serve_nothing_outside_their_roots(
    live_server: LiveServer, people: People
) -> None:
    forbidden = {
        "the portal's source": PORTAL_SOURCE.read_bytes()[:200],
        "/etc/passwd": PASSWD.read_bytes()[:64],
        "the data dir's secret": DATA_SECRET.encode(),
        "another participant's archive": BOBS_SECRET.encode(),
    }
    served = static_files()
    # The participant's token for the public route; the workers' credential for theirs, so the
    # traversal attempts get past authentication and reach the file lookup.
    as_alice = bearer(people.alice.token)
    as_worker = bearer(WORKER_TOKEN)
    attempts = targets(live_server, people)
    assert len(attempts) > 100
    for target in attempts:
        headers = as_worker if target.startswith("/internal/") else as_alice
        status, body = fetch(live_server, target, headers)
        assert status < 500, f"{target}: {status} {body[:200]!r}"
        for what, content in forbidden.items():
            assert content not in body, f"{target} served {what}"
        if status == 200:
            assert body in served, f"{target}: 200 with something that is not a static file"


def test_the_file_routes_do_serve_what_is_theirs(live_server: LiveServer, people: People) -> None:
    """The attempts above fail for the right reason: the same routes serve their own files."""
    status, body = fetch(live_server, "/static/js/submission.js", {})
    assert status == 200 and body == (STATIC_DIR / "js" / "submission.js").read_bytes()
    own = next(iter(people.alice.submissions.values()))
    status, body = fetch(
        live_server, f"/api/v1/submissions/{own}/archive", bearer(people.alice.token)
    )
    assert status == 200 and b"alice-own-data" in body
    status, body = fetch(
        live_server, f"/internal/v1/submissions/{own}/archive", bearer(WORKER_TOKEN)
    )
    assert status == 200 and b"alice-own-data" in body

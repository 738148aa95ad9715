"""A lying content type or file name changes nothing about where or whether an upload is stored.

Uploads are judged by their bytes alone: a real zip sent as ``image/png`` under the name
``../../etc/passwd`` is accepted and stored under a name the platform makes up, its original
name kept only as a sanitised label; a file that is not a zip is refused however it is labelled,
and leaves no row and no file. The label is inert where it is shown again: as a download's
``Content-Disposition`` and on the submission's page.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from edc import db
from edc.config import Settings
from edc.models import Submission
from tests.portal.security.conftest import People
from tests.support.competition import bearer, zip_of

BOUNDARY = "edc-security-boundary"
STORED_NAME = re.compile(r"uploads/[0-9a-f]{32}\.zip")
GOOD_ZIP = zip_of()


def multipart(filename: str, content_type: str, data: bytes) -> tuple[bytes, dict[str, str]]:
    """A body written by hand, so the part's headers are exactly what an attacker sends."""
    head = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    body = head + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def send(
    client: TestClient, token: str, filename: str, content_type: str, data: bytes
) -> httpx.Response:
    body, headers = multipart(filename, content_type, data)
    return client.post("/api/v1/submissions", content=body, headers={**headers, **bearer(token)})


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def row_count(settings: Settings) -> int:
    with db.session_scope(settings) as session:
        return session.scalar(select(func.count()).select_from(Submission)) or 0


@pytest.mark.parametrize(
    ("sent_name", "content_type", "label"),
    [
        ("../../etc/passwd", "image/png", "passwd"),
        ("/etc/passwd", "application/x-sharedlib", "passwd"),
        ("..\\..\\windows\\win.ini", "text/plain", "win.ini"),
        ("....//....//etc/cron.d/evil", "application/zip", "evil"),
        ("uploads/../../../data/edc.db", "application/octet-stream", "edc.db"),
        ("%2e%2e%2fetc%2fpasswd", "image/png", "%2e%2e%2fetc%2fpasswd"),
        ("..", "text/html", "submission.zip"),
        ("../", "image/gif", "submission.zip"),
    ],
)
def test_a_zip_under_a_lying_name_and_type_is_stored_under_its_own_name(
    client: TestClient,
    secure_settings: Settings,
    people: People,
    tmp_path: Path,
    sent_name: str,
    content_type: str,
    label: str,
) -> None:
    before = files_under(tmp_path)
    response = send(client, people.alice.token, sent_name, content_type, GOOD_ZIP)
    assert response.status_code == 201, response.text
    submission_id = response.json()["id"]
    with db.session_scope(secure_settings) as session:
        row = session.get(Submission, submission_id)
        assert row is not None
        file_path, original = row.file_path, row.original_filename
    assert STORED_NAME.fullmatch(file_path), file_path
    assert original == label
    stored = secure_settings.data_dir / file_path
    # The one new file anywhere under the test's directory is the upload, holding the same bytes.
    assert files_under(tmp_path) - before == {stored}
    assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(GOOD_ZIP).digest()

    download = client.get(
        f"/api/v1/submissions/{submission_id}/archive", headers=bearer(people.alice.token)
    )
    assert download.status_code == 200 and download.content == GOOD_ZIP
    assert download.headers["content-type"] == "application/zip"
    disposition = download.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert "/" not in disposition.replace("utf-8''", "") and "\\" not in disposition


def test_a_name_cannot_inject_headers_or_markup(
    client: TestClient, secure_settings: Settings, people: People
) -> None:
    # Browsers send a CR LF in a file name as %0D%0A (WHATWG); the portal decodes it like they do.
    sent = "<img src=x onerror=alert(1)>%0D%0AX-Injected: yes%22.zip"
    response = send(client, people.alice.token, sent, "text/html", GOOD_ZIP)
    assert response.status_code == 201, response.text
    submission_id = response.json()["id"]
    with db.session_scope(secure_settings) as session:
        row = session.get(Submission, submission_id)
        assert row is not None
        assert row.original_filename == '<img src=x onerror=alert(1)>X-Injected: yes".zip'

    download = client.get(
        f"/api/v1/submissions/{submission_id}/archive", headers=bearer(people.alice.token)
    )
    assert download.status_code == 200
    assert "x-injected" not in download.headers
    assert "\r" not in download.headers["content-disposition"]
    page = client.get(
        f"/submissions/{submission_id}",
        headers={**bearer(people.alice.token), "accept": "text/html"},
    )
    assert page.status_code == 200
    assert "<img src=x" not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text


NOT_ZIPS = {
    "png": b"\x89PNG\r\n\x1a\n" + bytes(64),
    "html": b"<!doctype html><script>alert(1)</script>",
    "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
    "elf": b"\x7fELF\x02\x01\x01" + bytes(64),
    "zip signature, then junk": b"PK\x03\x04" + bytes(200),
    "gzip": b"\x1f\x8b\x08\x00" + bytes(32),
}


@pytest.mark.parametrize("kind", sorted(NOT_ZIPS))
def test_a_non_zip_labelled_as_a_zip_is_refused_and_leaves_nothing(
    client: TestClient, secure_settings: Settings, people: People, kind: str
) -> None:
    rows, files = row_count(secure_settings), files_under(secure_settings.data_dir)
    response = send(client, people.alice.token, "decoder.zip", "application/zip", NOT_ZIPS[kind])
    assert response.status_code == 400
    body = response.json()
    assert body["code"] in ("not_a_zip", "truncated", "damaged"), body
    assert body["detail"].endswith(".")
    assert row_count(secure_settings) == rows
    assert files_under(secure_settings.data_dir) == files

"""The JSON API against real SQLite, PostgreSQL and Redis: uploads accepted, refused, listed."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
import stat
import subprocess
import zipfile
from collections.abc import Callable, Iterator, Mapping

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from edc import db
from edc.config import Settings
from edc.models import Submission
from edc.portal.app import create_app
from edc.scheduler.producer import job_id_for, queued_job_ids, submission_queue
from edc.status import SubmissionStatus
from tests.support.competition import bearer, make_user

GOOD_CODE = b"class Decoder:\n    pass\n"


def zip_of(entries: Mapping[str, bytes | tuple[bytes, int]], *, stored: bool = False) -> bytes:
    """A zip from {name: data} or {name: (data, unix mode with file type)}."""
    buffer = io.BytesIO()
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buffer, "w", method) as zf:
        for name, value in entries.items():
            data, mode = value if isinstance(value, tuple) else (value, stat.S_IFREG | 0o644)
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = mode << 16
            info.compress_type = method
            zf.writestr(info, data)
    return buffer.getvalue()


GOOD_ZIP = zip_of({"mine/submission.py": GOOD_CODE, "mine/README": b"hello"})


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    # Small limits so the refusals need only small bodies.
    return settings.model_copy(
        update={
            "max_upload_mb": 4,
            "max_unpacked_mb": 2,
            "max_archive_entries": 50,
            # Limits are tested in tests/services; here they must not get in the way.
            "max_queued_per_user": 1000,
            "submissions_per_day": 1000,
        }
    )


@pytest.fixture
def token(api_settings: Settings) -> str:
    return make_user(api_settings, "tester")[1]


@pytest.fixture
def client(api_settings: Settings, token: str) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings), headers=bearer(token)) as test_client:
        yield test_client


def upload(client: TestClient, data: bytes, filename: str = "decoder.zip") -> dict[str, object]:
    response = client.post(
        "/api/v1/submissions", files={"file": (filename, data, "application/zip")}
    )
    return {"http": response.status_code, **response.json()}


def row_count(settings: Settings) -> int:
    with db.session_scope(settings) as session:
        return session.scalar(select(func.count()).select_from(Submission)) or 0


def uploads_left(settings: Settings) -> list[str]:
    folder = settings.uploads_dir
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def assert_nothing_kept(settings: Settings) -> None:
    assert row_count(settings) == 0
    assert uploads_left(settings) == []  # neither a final file nor a .part
    assert queued_job_ids(settings) == []


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- accepted ---


def test_good_upload_is_stored_recorded_and_queued_by_id(
    client: TestClient, api_settings: Settings
) -> None:
    response = client.post(
        "/api/v1/submissions", files={"file": ("decoder.zip", GOOD_ZIP, "application/zip")}
    )
    assert response.status_code == 201
    body = response.json()
    assert body == {"id": body["id"], "status": "queued", "track": "default"}

    with db.session_scope(api_settings) as session:
        row = session.get(Submission, body["id"])
        assert row is not None
        assert row.status is SubmissionStatus.QUEUED
        assert row.original_filename == "decoder.zip"
        assert row.size_bytes == len(GOOD_ZIP)
        assert row.sha256 == hashlib.sha256(GOOD_ZIP).hexdigest()
        stored = api_settings.data_dir / row.file_path
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == row.sha256
    assert uploads_left(api_settings) == [stored.name]

    assert queued_job_ids(api_settings) == [job_id_for(body["id"], 1)]
    job = submission_queue(api_settings, body["id"]).fetch_job(job_id_for(body["id"], 1))
    assert job is not None
    assert job.args == (body["id"],)
    assert job.kwargs == {"attempt": 1}


def test_read_one_submission(client: TestClient) -> None:
    created = upload(client, GOOD_ZIP)
    response = client.get(f"/api/v1/submissions/{created['id']}")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == created["id"]
    assert body["status"] == "queued"
    assert body["sha256"] == hashlib.sha256(GOOD_ZIP).hexdigest()
    assert body["size_bytes"] == len(GOOD_ZIP)
    assert body["attempt"] == 1
    assert body["created_at"].endswith(("+00:00", "Z"))
    assert body["result_metrics"] is None and body["failure_reason"] is None
    assert "file_path" not in body and "logs" not in body


def test_unknown_submission_is_404(client: TestClient) -> None:
    response = client.get("/api/v1/submissions/999999")
    assert response.status_code == 404
    assert response.json() == {"detail": "There is no submission 999999.", "code": "not_found"}


def test_listing_is_newest_first_and_paginated(client: TestClient) -> None:
    ids = [upload(client, GOOD_ZIP)["id"] for _ in range(3)]
    first = client.get("/api/v1/submissions", params={"limit": 2}).json()
    assert [item["id"] for item in first["items"]] == ids[::-1][:2]
    assert (first["total"], first["limit"], first["offset"]) == (3, 2, 0)
    rest = client.get("/api/v1/submissions", params={"limit": 2, "offset": 2}).json()
    assert [item["id"] for item in rest["items"]] == [ids[0]]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"offset": -1}])
def test_listing_bounds(client: TestClient, params: dict[str, int]) -> None:
    response = client.get("/api/v1/submissions", params=params)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request"
    assert response.json()["detail"].startswith("The request is invalid: query.")


def multipart_body(filename: bytes, data: bytes, boundary: bytes = b"b0undary") -> bytes:
    """A form body written byte for byte (HTTP clients would percent-encode odd names)."""
    return (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: application/zip\r\n\r\n" + data + b"\r\n--" + boundary + b"--\r\n"
    )


def test_odd_unicode_filename_is_stored_sanitised(
    client: TestClient, api_settings: Settings
) -> None:
    odd = "C:\\Users\\me\\évil\u202e\u200bnäme\x00\t\x1b🚀 %22q%22" + "x" * 300 + ".zip"
    response = client.post(
        "/api/v1/submissions",
        content=multipart_body(odd.encode(), GOOD_ZIP),
        headers={"content-type": "multipart/form-data; boundary=b0undary"},
    )
    assert response.status_code == 201
    with db.session_scope(api_settings) as session:
        row = session.get(Submission, response.json()["id"])
        assert row is not None
        name = row.original_filename
    # Folders, bidi overrides, zero-width and control characters gone; cut to 255, extension kept.
    assert name.startswith('évilnäme🚀 "q"xxx')
    assert name.endswith("xxx.zip")
    assert len(name) == 255


def test_filename_that_is_not_utf8_is_read_as_latin1(
    client: TestClient, api_settings: Settings
) -> None:
    response = client.post(
        "/api/v1/submissions",
        content=multipart_body(b"caf\xe9.zip", GOOD_ZIP),
        headers={"content-type": "multipart/form-data; boundary=b0undary"},
    )
    assert response.status_code == 201
    with db.session_scope(api_settings) as session:
        row = session.get(Submission, response.json()["id"])
        assert row is not None and row.original_filename == "café.zip"


def test_queue_down_still_accepts_and_keeps_the_row(
    api_settings: Settings, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = api_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{closed_port()}/0"})
    app = create_app(settings)
    with TestClient(app, headers=bearer(token)) as client, caplog.at_level(logging.WARNING):
        created = upload(client, GOOD_ZIP)
    assert created["http"] == 201
    with db.session_scope(settings) as session:
        row = session.get(Submission, created["id"])
        assert row is not None and row.status is SubmissionStatus.QUEUED
        assert (settings.data_dir / row.file_path).is_file()
    assert "reconciler will enqueue it" in caplog.text


def test_openapi_documents_the_file_field(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/api/v1/submissions"]["post"]["requestBody"]
    schema = body["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["file"]
    assert schema["properties"]["file"]["format"] == "binary"
    assert client.get("/docs").status_code == 200


# --- refused: 4xx with a clear detail, and no row, no file, no job ---


def _many_entries() -> bytes:
    return zip_of({"submission.py": GOOD_CODE} | {f"f{i}.txt": b"x" for i in range(50)})


def _symlink() -> bytes:
    return zip_of({"submission.py": GOOD_CODE, "link": (b"/etc/passwd", stat.S_IFLNK | 0o777)})


BAD_UPLOADS: list[tuple[str, Callable[[], bytes], int, str, str]] = [
    (
        "not a zip",
        lambda: b"%PDF-1.7 not a zip",
        400,
        "not_a_zip",
        "The upload is not a zip archive.",
    ),
    ("empty", lambda: b"", 400, "empty", "The upload is empty."),
    (
        "truncated",
        lambda: zip_of({"submission.py": os.urandom(5000)})[:3000],
        400,
        "truncated",
        "The archive is truncated: its table of contents is missing.",
    ),
    (
        "dot-dot",
        lambda: zip_of({"submission.py": GOOD_CODE, "../evil.py": b"x"}),
        400,
        "path_traversal",
        "The archive contains a path outside its root: '../evil.py'.",
    ),
    (
        "absolute",
        lambda: zip_of({"submission.py": GOOD_CODE, "/etc/cron.d/x": b"x"}),
        400,
        "absolute_path",
        "The archive contains an absolute path: '/etc/cron.d/x'.",
    ),
    ("symlink", _symlink, 400, "symlink", "The archive contains a symbolic link: 'link'."),
    (
        "ratio bomb",
        lambda: zip_of({"submission.py": GOOD_CODE, "zeros": bytes(1_500_000)}),
        400,
        "zip_bomb",
        "It looks like a zip bomb.",
    ),
    (
        "too many entries",
        _many_entries,
        400,
        "too_many_entries",
        "The archive has 51 entries; the limit is 50.",
    ),
    (
        "too large unpacked",
        lambda: zip_of({"submission.py": GOOD_CODE, "w": os.urandom(3 * 2**20)}, stored=True),
        400,
        "too_large_unpacked",
        "The archive unpacks to 3.0 MB; the limit is 2.0 MB.",
    ),
    (
        "missing entry point",
        lambda: zip_of({"main.py": GOOD_CODE}),
        400,
        "missing_entry_point",
        "The archive has no entry point",
    ),
    (
        "over the size limit by Content-Length",
        lambda: os.urandom(5 * 2**20),
        413,
        "too_large",
        "The upload is larger than the limit of 4 MB.",
    ),
    (
        "over the size limit while streaming",
        lambda: os.urandom(4 * 2**20 + 1),
        413,
        "too_large",
        "The upload is larger than the limit of 4 MB.",
    ),
]


@pytest.mark.parametrize(
    ("make", "status", "code", "detail"),
    [case[1:] for case in BAD_UPLOADS],
    ids=[case[0] for case in BAD_UPLOADS],
)
def test_bad_upload_is_refused_and_leaves_nothing(
    client: TestClient,
    api_settings: Settings,
    make: Callable[[], bytes],
    status: int,
    code: str,
    detail: str,
) -> None:
    answer = upload(client, make())
    assert answer["http"] == status
    assert answer["code"] == code
    assert detail in str(answer["detail"])
    assert_nothing_kept(api_settings)


def test_request_without_the_file_field(client: TestClient, api_settings: Settings) -> None:
    response = client.post("/api/v1/submissions", files={"archive": ("a.zip", GOOD_ZIP)})
    assert response.status_code == 400
    assert response.json() == {
        "detail": "The request has no file field named 'file'.",
        "code": "missing_file",
    }
    assert_nothing_kept(api_settings)


def test_request_that_is_not_multipart(client: TestClient, api_settings: Settings) -> None:
    response = client.post("/api/v1/submissions", content=GOOD_ZIP)
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"
    assert "multipart/form-data" in response.json()["detail"]
    assert_nothing_kept(api_settings)


def test_multipart_body_cut_short(client: TestClient, api_settings: Settings) -> None:
    body = (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="file"; filename="a.zip"\r\n'
        b"Content-Type: application/zip\r\n\r\n" + GOOD_ZIP
    )  # no closing boundary
    response = client.post(
        "/api/v1/submissions",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=XyZ"},
    )
    assert response.status_code == 400
    assert response.json() == {
        "detail": "The upload ended before its multipart body was complete.",
        "code": "incomplete",
    }
    assert_nothing_kept(api_settings)


@pytest.fixture
def full_disk_client(api_settings: Settings, token: str) -> Iterator[TestClient]:
    """The uploads folder on a 512 KB tmpfs, so a 1 MB upload really fills the disk."""
    uploads = api_settings.uploads_dir
    uploads.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(uploads)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        with TestClient(create_app(api_settings), headers=bearer(token)) as test_client:
            yield test_client
    finally:
        subprocess.run(["umount", str(uploads)], check=True)


def test_full_disk_is_507_and_leaves_nothing(
    full_disk_client: TestClient, api_settings: Settings
) -> None:
    data = zip_of({"submission.py": GOOD_CODE, "w": os.urandom(2**20)}, stored=True)
    answer = upload(full_disk_client, data)
    assert answer == {
        "http": 507,
        "detail": "The upload disk is full, so nothing was kept; try again later.",
        "code": "storage_full",
    }
    assert_nothing_kept(api_settings)

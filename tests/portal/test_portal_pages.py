"""The HTML pages: the list renders offline-ready, the upload form redirects or explains."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from edc import db
from edc.config import Settings
from edc.models import Submission, User
from edc.portal.app import create_app
from edc.status import FailureReason, SubmissionStatus
from tests.support.competition import csrf_from, make_user, web_login

BOOTSTRAP_CSS = "/static/vendor/bootstrap/bootstrap.min.css"
BOOTSTRAP_JS = "/static/vendor/bootstrap/bootstrap.bundle.min.js"


def good_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("submission.py", "class Decoder:\n    pass\n")
    return buffer.getvalue()


@pytest.fixture
def owner_id(settings: Settings) -> int:
    return make_user(settings, "pager")[0]


@pytest.fixture
def client(settings: Settings, owner_id: int) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        web_login(test_client, "pager")
        yield test_client


def add_row(settings: Settings, **fields: Any) -> int:
    with db.session_scope(settings) as session:
        owner = session.scalar(select(User.id).where(User.name == "pager"))
    values: dict[str, Any] = {
        "user_id": owner,
        "status": SubmissionStatus.COMPLETED,
        "file_path": "uploads/x.zip",
        "sha256": "ab" * 32,
        "size_bytes": 123,
        "original_filename": "row.zip",
    }
    values.update(fields)
    with db.session_scope(settings) as session:
        row = Submission(**values)
        session.add(row)
        session.flush()
        return row.id


def test_page_lists_submissions_with_vendored_bootstrap(
    client: TestClient, settings: Settings
) -> None:
    add_row(settings, original_filename="first <b>.zip", status=SubmissionStatus.QUEUED)
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    assert "Efficient-Decode Competition" in html
    assert "first &lt;b&gt;.zip" in html  # escaped, not markup
    assert 'class="badge text-bg-secondary">queued<' in html
    assert f'href="{BOOTSTRAP_CSS}"' in html
    assert f'src="{BOOTSTRAP_JS}"' in html
    # Renders offline: nothing is fetched from another host.
    assert not re.search(r'(src|href)="(https?:)?//', html)
    css = client.get(BOOTSTRAP_CSS)
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert "Bootstrap" in css.text[:200]
    assert client.get(BOOTSTRAP_JS).status_code == 200
    assert client.get("/static/vendor/bootstrap/LICENSE").status_code == 200
    for asset in (
        "vendor/chartjs/chart.umd.min.js",
        "vendor/chartjs/LICENSE.md",
        "js/submission.js",
    ):
        assert client.get(f"/static/{asset}").status_code == 200


def test_page_shows_newest_first_with_key_figures(client: TestClient, settings: Settings) -> None:
    older = add_row(
        settings,
        original_filename="older.zip",
        result_metrics={"wall_s": 1.234, "exit_code": 0, "peak_memory_bytes": 52_428_800},
    )
    newer = add_row(
        settings,
        original_filename="newer.zip",
        result_metrics={
            "correct": True,
            "score": 12.5,
            "latency": {"tpot_ms": {"p50": 3.21, "p99": 9.0}, "ttft_ms": "n/a"},
            "throughput": {"output_tokens_per_s": 1234.5},
        },
    )
    failed = add_row(
        settings,
        original_filename="failed.zip",
        status=SubmissionStatus.FAILED,
        failure_reason=FailureReason.CRASHED,
        failure_message="The program exited with code 3.",
        result_metrics={"latency": None, "wall_s": "slow", "exit_code": 3},
    )
    html = client.get("/").text
    assert html.index("failed.zip") < html.index("newer.zip") < html.index("older.zip")
    older_row = _row(html, older)
    assert "1.23 s" in older_row and "50.0 MB" in older_row and "exit code" in older_row
    newer_row = _row(html, newer)
    for text in ("score", "12.5", "TPOT p50", "3.21 ms", "1,234 tok/s", "correct"):
        assert text in newer_row
    assert "TTFT" not in newer_row  # not a number: left out
    failed_row = _row(html, failed)
    assert "text-bg-danger" in failed_row and "crashed" in failed_row
    assert "The program exited with code 3." in failed_row
    assert "wall" not in failed_row


def _row(html: str, submission_id: int) -> str:
    start = html.index(f'<tr id="submission-{submission_id}">')
    return html[start : html.index("</tr>", start)]


def form_token(client: TestClient) -> dict[str, str]:
    return {"csrf_token": csrf_from(client.get("/").text)}


def test_upload_form_redirects_to_the_live_page(client: TestClient, settings: Settings) -> None:
    response = client.post(
        "/submit",
        data=form_token(client),
        files={"file": ("mine.zip", good_zip())},
        follow_redirects=False,
    )
    assert response.status_code == 303
    with db.session_scope(settings) as session:
        new_id = session.scalar(select(func.max(Submission.id)))
    assert response.headers["location"] == f"/submissions/{new_id}"
    page = client.get(response.headers["location"])
    assert f"Submission #{new_id}" in page.text
    assert "mine.zip" in page.text
    assert 'data-status="queued"' in page.text
    assert "position 1 in the queue" in page.text
    assert f"/api/v1/submissions/{new_id}/events" in page.text
    assert "mine.zip" in client.get("/").text


def test_upload_form_without_its_csrf_token_is_refused(
    client: TestClient, settings: Settings
) -> None:
    response = client.post(
        "/submit", data={"csrf_token": "forged"}, files={"file": ("mine.zip", good_zip())}
    )
    assert response.status_code == 403
    assert "security token" in response.text
    with db.session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(Submission)) == 0
    assert list(settings.uploads_dir.iterdir()) == []


def test_refused_form_upload_shows_the_reason(client: TestClient, settings: Settings) -> None:
    response = client.post(
        "/submit", data=form_token(client), files={"file": ("notes.zip", b"plain text")}
    )
    assert response.status_code == 400
    assert "text/html" in response.headers["content-type"]
    assert (
        '<div class="alert alert-danger" role="alert">The upload is not a zip archive.</div>'
        in (response.text)
    )
    with db.session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(Submission)) == 0
    assert list(settings.uploads_dir.iterdir()) == []


def test_page_paginates(client: TestClient, settings: Settings) -> None:
    for i in range(55):
        add_row(settings, original_filename=f"n{i:02d}.zip")
    first = client.get("/").text
    assert "n54.zip" in first and "n05.zip" in first and "n04.zip" not in first
    assert 'href="?offset=50">Older' in first
    second = client.get("/?offset=50").text
    assert "n04.zip" in second and "n00.zip" in second and "n05.zip" not in second
    assert 'href="?offset=0">Newer' in second

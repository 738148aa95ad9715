"""Helpers for tests of the competition: accounts, rows, clients and forms."""

from __future__ import annotations

import functools
import io
import re
import secrets
import zipfile
from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient

from edc import db, security
from edc.config import Settings
from edc.models import Submission, utcnow
from edc.services import accounts
from edc.status import SubmissionStatus
from edc.tasks.task import Task, bundled_task_dir

PASSWORD = "correct horse battery"


@functools.cache
def _hash_of(password: str) -> str:
    # argon2 is slow by design; tests hash each test password once.
    return security.hash_password(password)


def make_user(
    settings: Settings, name: str, *, admin: bool = False, password: str | None = PASSWORD
) -> tuple[int, str]:
    """A user with an API token: (user id, token)."""
    with db.session_scope(settings) as session:
        user = accounts.create_user(session, name=name, is_admin=admin)
        user.password_hash = _hash_of(password) if password is not None else None
        token = accounts.issue_api_token(session, user=user, label="test")
        return user.id, token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def zip_of(files: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in (files or {"submission.py": "class Decoder:\n    pass\n"}).items():
            archive.writestr(name, text)
    return buffer.getvalue()


def upload(
    client: TestClient, token: str | None, data: bytes | None = None, *, track: str | None = None
) -> Any:
    return client.post(
        "/api/v1/submissions",
        data={"track": track} if track else {},
        files={"file": ("s.zip", data or zip_of(), "application/zip")},
        headers=bearer(token) if token else {},
    )


@functools.cache
def bundled_metric() -> str:
    """The bundled task's ranking metric: fabricated results are scored under it, so the portal's
    start (which re-scores results of older rules, see edc.services.rescore) leaves them be."""
    return Task.load(bundled_task_dir()).ranking.metric


def metrics(
    score: float,
    ci: tuple[float, float] | None = None,
    *,
    correct: bool = True,
    tpot: float | None = None,
) -> dict[str, Any]:
    low, high = ci if ci else (score, score)
    tpot_p50 = score if tpot is None else tpot
    return {
        "correct": correct,
        "score": score,
        "score_ci": [low, high],
        "score_metric": bundled_metric(),
        "latency": {
            "tpot_ms": {
                "p50": tpot_p50,
                "p90": tpot_p50 * 1.2,
                "p99": tpot_p50 * 1.5,
                "mean": tpot_p50,
            },
            "ttft_ms": {"p50": 10.0, "p90": 12.0, "p99": 15.0, "mean": 10.5},
            "itl_ms": {"p50": tpot_p50, "p90": tpot_p50, "p99": tpot_p50, "mean": tpot_p50},
            "e2e_ms": {"p50": 100.0, "p90": 110.0, "p99": 120.0, "mean": 101.0},
        },
        "throughput": {"output_tokens_per_s": 1000.0 / max(score, 1e-9)},
        "itl_ms_by_position": [tpot_p50] * 8,
    }


def add_submission(settings: Settings, user_id: int | None, **fields: Any) -> int:
    """A row written straight to the database (as a worker would have left it)."""
    now = fields.pop("created_at", None) or utcnow()
    values: dict[str, Any] = {
        "status": SubmissionStatus.COMPLETED,
        "file_path": "uploads/none.zip",
        # A fresh archive per row: rows of one archive pool into one leaderboard entry.
        "sha256": secrets.token_hex(32),
        "size_bytes": 1,
        "original_filename": "s.zip",
        "user_id": user_id,
        "created_at": now,
        "queued_at": now,
        "attempt": 1,
    }
    values.update(fields)
    with db.session_scope(settings) as session:
        row = Submission(**values)
        session.add(row)
        session.flush()
        return row.id


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def web_login(client: TestClient, name: str, password: str = PASSWORD) -> None:
    """Log a TestClient in through the form, like a browser (it keeps the cookies)."""
    token = csrf_from(client.get("/login").text)
    response = client.post(
        "/login",
        data={"csrf_token": token, "name": name, "password": password, "next": "/"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text

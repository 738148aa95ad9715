"""Fixtures for the security tests: two participants with private data, an admin, the app.

Bob's rows, archive files, logs and token carry ``BOBS_SECRET``; the tests act as alice and
check that none of it reaches her and that nothing of bob's changes.
"""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from edc import db
from edc.config import Settings
from edc.models import ApiToken
from edc.portal.app import create_app
from edc.status import FailureReason, SubmissionStatus
from tests.support.competition import add_submission, make_user, metrics
from tests.support.threaded_server import serve_in_thread

BOBS_SECRET = "bob-private-d41c"
WORKER_TOKEN = "worker-credential-for-tests-only"


@pytest.fixture
def secure_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "max_upload_mb": 1,
            # Limits are tested in tests/services; here they would only hide routes behind 429.
            "submissions_per_day": 100_000,
            "max_queued_per_user": 100_000,
            # The workers' routes are live, so they are checked against participants too.
            "worker_token": WORKER_TOKEN,
        }
    )


def stored_archive(settings: Settings, text: str) -> str:
    """A real zip on disk, stored uncompressed so ``text`` shows in the bytes served."""
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    path = settings.uploads_dir / f"{uuid.uuid4().hex}.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("submission.py", f"# {text}\nclass Decoder:\n    pass\n")
    path.write_bytes(buffer.getvalue())
    return path.relative_to(settings.data_dir).as_posix()


@dataclass
class Participant:
    user_id: int
    name: str
    token: str
    token_id: int
    # One submission in each state a participant's row can be in.
    submissions: dict[SubmissionStatus, int]


def _participant(settings: Settings, name: str, secret: str) -> Participant:
    user_id, token = make_user(settings, name)
    with db.session_scope(settings) as session:
        token_id = session.scalars(select(ApiToken.id).where(ApiToken.user_id == user_id)).one()
    private: dict[str, Any] = {
        "original_filename": f"{secret}.zip",
        "logs": f"hidden-prompt logs {secret}",
        "public_logs": f"public-prompt logs {secret}",
    }
    rows = {
        SubmissionStatus.COMPLETED: add_submission(
            settings,
            user_id,
            result_metrics={**metrics(5.0), "note": secret},
            file_path=stored_archive(settings, secret),
            **private,
        ),
        SubmissionStatus.FAILED: add_submission(
            settings,
            user_id,
            status=SubmissionStatus.FAILED,
            failure_reason=FailureReason.WRONG_OUTPUT,
            failure_message=f"token 3 differs {secret}",
            file_path=stored_archive(settings, secret),
            **private,
        ),
        SubmissionStatus.QUEUED: add_submission(
            settings,
            user_id,
            status=SubmissionStatus.QUEUED,
            file_path=stored_archive(settings, secret),
            **private,
        ),
    }
    return Participant(user_id, name, token, token_id, rows)


@dataclass
class People:
    alice: Participant
    bob: Participant
    root_token: str


@pytest.fixture
def people(secure_settings: Settings) -> People:
    return People(
        alice=_participant(secure_settings, "alice", "alice-own-data"),
        bob=_participant(secure_settings, "bob", BOBS_SECRET),
        root_token=make_user(secure_settings, "root", admin=True, password=None)[1],
    )


@pytest.fixture
def app(secure_settings: Settings) -> FastAPI:
    return create_app(secure_settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@dataclass
class LiveServer:
    host: str
    port: int
    settings: Settings


@pytest.fixture
def live_server(app: FastAPI, secure_settings: Settings) -> Iterator[LiveServer]:
    """The portal on a real uvicorn server in a thread: requests parsed as in production."""
    with serve_in_thread(app) as port:
        yield LiveServer("127.0.0.1", port, secure_settings)

"""The portal's internal archive route on the real databases: workers only, absent when off."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from edc import db
from edc.config import Settings
from edc.models import Submission
from edc.portal.app import create_app
from tests.support.competition import bearer, make_user, zip_of

WORKER_TOKEN = "worker-credential-for-tests"


def archive_url(submission_id: int) -> str:
    return f"/internal/v1/submissions/{submission_id}/archive"


@pytest.fixture
def portal_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"worker_token": WORKER_TOKEN})


@pytest.fixture
def client(portal_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(portal_settings)) as test_client:
        yield test_client


def uploaded(client: TestClient, settings: Settings, payload: bytes) -> int:
    token = make_user(settings, f"p{hashlib.sha256(payload).hexdigest()[:8]}")[1]
    response = client.post(
        "/api/v1/submissions",
        files={"file": ("s.zip", payload, "application/zip")},
        headers=bearer(token),
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_the_worker_credential_gets_the_stored_bytes(
    client: TestClient, portal_settings: Settings
) -> None:
    payload = zip_of({"submission.py": "class Decoder:\n    pass\n# internal\n"})
    submission_id = uploaded(client, portal_settings, payload)

    response = client.get(archive_url(submission_id), headers=bearer(WORKER_TOKEN))

    assert response.status_code == 200, response.text
    assert response.content == payload
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["x-edc-sha256"] == hashlib.sha256(payload).hexdigest()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("not-the-credential"),
        bearer(WORKER_TOKEN + "x"),
        {"Authorization": WORKER_TOKEN},  # no scheme
        {"Authorization": f"Basic {WORKER_TOKEN}"},
    ],
    ids=["missing", "wrong", "longer", "no-scheme", "basic"],
)
def test_anything_but_the_worker_credential_is_refused(
    client: TestClient, portal_settings: Settings, headers: dict[str, str]
) -> None:
    submission_id = uploaded(client, portal_settings, zip_of())
    response = client.get(archive_url(submission_id), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert b"PK" not in response.content


def test_a_participant_token_is_not_the_worker_credential(
    client: TestClient, portal_settings: Settings
) -> None:
    _user_id, participant = make_user(portal_settings, "owner")
    response = client.post(
        "/api/v1/submissions",
        files={"file": ("s.zip", zip_of(), "application/zip")},
        headers=bearer(participant),
    )
    submission_id = response.json()["id"]
    # The owner may download their own zip from the public API, not from the internal route.
    assert client.get(archive_url(submission_id), headers=bearer(participant)).status_code == 401


def test_ids_outside_the_database_are_not_found(
    client: TestClient, portal_settings: Settings
) -> None:
    submission_id = uploaded(client, portal_settings, zip_of())
    response = client.get(archive_url(submission_id + 1000), headers=bearer(WORKER_TOKEN))
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_a_row_whose_file_is_gone_or_outside_the_data_dir_is_not_served(
    client: TestClient, portal_settings: Settings
) -> None:
    submission_id = uploaded(client, portal_settings, zip_of())
    with db.session_scope(portal_settings) as session:
        row = session.get(Submission, submission_id)
        assert row is not None
        (portal_settings.data_dir / row.file_path).unlink()
    assert client.get(archive_url(submission_id), headers=bearer(WORKER_TOKEN)).status_code == 404

    outside = portal_settings.data_dir.parent / "secret.zip"
    outside.write_bytes(b"PK not for workers")
    with db.session_scope(portal_settings) as session:
        row = session.get(Submission, submission_id)
        assert row is not None
        row.file_path = "../secret.zip"
    response = client.get(archive_url(submission_id), headers=bearer(WORKER_TOKEN))
    assert response.status_code == 404
    assert b"not for workers" not in response.content


def test_without_a_configured_credential_the_route_does_not_exist(settings: Settings) -> None:
    assert settings.worker_token is None
    with TestClient(create_app(settings)) as client:
        submission_id = uploaded(client, settings, zip_of())
        internal = client.get(archive_url(submission_id), headers=bearer(WORKER_TOKEN))
        unknown = client.get("/internal/v1/no-such-route", headers=bearer(WORKER_TOKEN))
    assert internal.status_code == unknown.status_code == 404
    # Word for word what a missing path gets (the answer may name the path asked for).
    same_as_unknown = unknown.text.replace("/internal/v1/no-such-route", archive_url(submission_id))
    assert internal.text == same_as_unknown
    assert "www-authenticate" not in internal.headers


def test_internal_routes_stay_out_of_the_api_docs(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/internal")]

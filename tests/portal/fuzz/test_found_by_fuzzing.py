"""What the schema fuzzer found, pinned down so it stays fixed, on every route it applies to.

1. An id past the database's integer range was a 500 (PostgreSQL: integer out of range; SQLite:
   OverflowError): ids and offsets are now bounded, so such a request is a 422.
2. The 422 answer and the error answers of the CSV routes did not match the documented shapes,
   and a body that cannot be parsed (400) was undocumented.
3. A 405 listed only one route's methods in ``Allow`` (``POST`` for ``/api/v1/submissions``,
   which also takes ``GET``), and routing's own 404/405 were not the ``{detail, code}`` shape.
4. A NUL character in a text field (a log-in name, a disqualification reason) was a 500 on
   PostgreSQL, whose text cannot hold it: JSON bodies now refuse it with 422, forms with 400.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from edc.config import Settings
from edc.portal.app import create_app
from edc.portal.deps import MAX_ROW_ID
from tests.portal.security.routes import endpoints
from tests.support.competition import add_submission, bearer, csrf_from, make_user

WORKER_TOKEN = "worker-credential-for-tests-only"


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings.model_copy(update={"worker_token": WORKER_TOKEN}))


@pytest.fixture
def admin(app: FastAPI, settings: Settings) -> Iterator[TestClient]:
    token = make_user(settings, "root", admin=True)[1]
    with TestClient(app, headers={**bearer(token), "accept": "application/json"}) as client:
        yield client


@pytest.mark.parametrize("ident", [MAX_ROW_ID + 1, 2**63, 2**64, -(2**63) - 1])
def test_an_id_out_of_the_databases_range_is_invalid_not_an_error(
    app: FastAPI, admin: TestClient, ident: int
) -> None:
    # As an admin (and as the workers on their route), so nothing is refused before the lookup.
    routes = [e for e in endpoints(app) if {"submission_id", "token_id"} & set(e.params)]
    assert len(routes) >= 10
    for endpoint in routes:
        url = endpoint.url({"submission_id": str(ident), "token_id": str(ident), "action": "rerun"})
        headers = bearer(WORKER_TOKEN) if url.startswith("/internal/") else {}
        response = admin.request(endpoint.method, url, headers=headers, json={})
        assert response.status_code == 422, f"{endpoint}: {response.status_code}"
        assert response.json()["code"] == "invalid_request"


def test_the_largest_id_is_simply_not_found(admin: TestClient) -> None:
    response = admin.get(f"/api/v1/submissions/{MAX_ROW_ID}")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


@pytest.mark.parametrize("offset", [MAX_ROW_ID + 1, 2**63])
def test_an_offset_out_of_range_is_invalid_not_an_error(admin: TestClient, offset: int) -> None:
    for path in ("/api/v1/submissions", "/", "/admin"):
        response = admin.get(f"{path}?offset={offset}")
        assert response.status_code == 422, path


def _refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "$ref":
                yield inner
            yield from _refs(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _refs(inner)


def test_every_documented_refusal_is_the_json_error_shape(app: FastAPI) -> None:
    schema = app.openapi()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert not any("HTTPValidationError" in ref for ref in _refs(schema))
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if status[0] not in "45" or "content" not in response:
                    continue
                assert list(response["content"]) == ["application/json"], (method, path, status)
                schema_ref = response["content"]["application/json"]["schema"].get("$ref")
                assert schema_ref == "#/components/schemas/ErrorOut", (method, path, status)
            if "requestBody" in operation:
                assert "400" in operation["responses"], (method, path)


def test_the_served_schema_is_the_corrected_one(admin: TestClient, app: FastAPI) -> None:
    assert admin.get("/openapi.json").json() == app.openapi()


def test_a_body_that_cannot_be_parsed_is_a_documented_400(admin: TestClient) -> None:
    response = admin.post(
        "/api/v1/tokens",
        content=b"X\xff\xfe",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request" and response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/api/v1/submissions", "GET, POST"),
        ("DELETE", "/api/v1/submissions", "GET, POST"),
        ("PUT", "/api/v1/submissions/1", "GET"),
        ("POST", "/healthz", "GET"),
        ("GET", "/logout", "POST"),
        ("DELETE", "/login", "GET, POST"),
    ],
)
def test_405_lists_every_method_the_path_takes(
    admin: TestClient, method: str, path: str, allowed: str
) -> None:
    response = admin.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json() == {
        "detail": f"{method} is not allowed at {path}; use {allowed}.",
        "code": "method_not_allowed",
    }


def test_an_unknown_path_is_a_404_in_the_error_shape_or_a_page(admin: TestClient) -> None:
    response = admin.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json() == {
        "detail": "There is nothing at /api/v1/nothing-here.",
        "code": "not_found",
    }
    page = admin.get("/nothing-here", headers={"accept": "text/html"})
    assert page.status_code == 404
    assert "There is nothing at /nothing-here." in page.text and "<html" in page.text.lower()


def test_a_nul_in_a_json_text_field_is_a_422(admin: TestClient, settings: Settings) -> None:
    submission_id = add_submission(settings, None)
    for url, body in (
        ("/api/v1/tokens", {"name": "root\x00", "password": "x"}),
        ("/api/v1/tokens", {"name": "root", "password": "x", "label": "a\x00b"}),
        (f"/api/v1/admin/submissions/{submission_id}/disqualify", {"reason": "a\x00b"}),
    ):
        response = admin.post(url, json=body)
        assert response.status_code == 422, (url, body, response.text)
        assert response.json()["code"] == "invalid_request"


def test_a_nul_in_a_form_field_is_a_400(app: FastAPI, settings: Settings) -> None:
    make_user(settings, "alice")
    with TestClient(app) as browser:
        csrf = csrf_from(browser.get("/login").text)
        for path, form in (
            ("/login", {"name": "alice\x00", "password": "x"}),
            ("/signup", {"name": "carol\x00", "password": "p" * 12, "password_again": "p" * 12}),
        ):
            response = browser.post(
                path, data={"csrf_token": csrf, **form}, headers={"accept": "application/json"}
            )
            assert response.status_code == 400, (path, response.text)
            assert "NUL" in response.json()["detail"]

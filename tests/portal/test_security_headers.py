"""Every answer carries the security headers, /docs needs nothing from another host, and a real
browser runs the pages under the Content-Security-Policy without one violation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edc.config import Settings
from edc.portal.app import create_app
from edc.portal.security_headers import POLICY
from edc.status import SubmissionStatus
from tests.portal.security.routes import endpoints
from tests.support.browser import watched_page
from tests.support.competition import PASSWORD, add_submission, make_user, metrics
from tests.support.databases import postgres_only
from tests.support.threaded_server import serve_in_thread

HEADERS = {
    "content-security-policy": POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def assert_secured(response: Any, where: str) -> None:
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, f"{where}: {name}"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_every_route_answers_with_the_headers_whatever_the_status(client: TestClient) -> None:
    app = client.app
    assert hasattr(app, "routes")
    for endpoint in endpoints(app):  # type: ignore[arg-type]
        url = re.sub(r"{[^}]+}", "1", endpoint.path)
        response = client.request(endpoint.method, url, follow_redirects=False)
        assert_secured(response, f"{endpoint} ({response.status_code})")
    assert_secured(client.get("/no/such/page"), "a 404")
    assert_secured(client.get("/static/js/docs.js"), "a static file")


def test_an_unhandled_error_answers_500_with_the_headers(settings: Settings) -> None:
    # Starlette's ServerErrorMiddleware answers it, outside every middleware the app adds.
    secure = settings.model_copy(update={"cookie_secure": True})
    app = create_app(secure)

    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/test-only/broken", broken)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/test-only/broken")
    assert response.status_code == 500
    assert_secured(response, "a 500")
    assert "max-age=" in response.headers["strict-transport-security"]


def test_hsts_only_where_cookies_are_secure(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"cookie_secure": True}))) as secure:
        assert "max-age=" in secure.get("/healthz").headers["strict-transport-security"]
    with TestClient(create_app(settings)) as plain:  # dev: loopback over plain HTTP
        assert "strict-transport-security" not in plain.get("/healthz").headers


def test_docs_are_served_from_the_platform_only(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "'unsafe-inline'" in page.headers["content-security-policy"]  # styles only
    assert "script-src 'self';" in page.headers["content-security-policy"]
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/static/") for s in sources), sources
    assert "<script>" not in page.text  # no inline script
    for source in sources:
        assert client.get(source).status_code == 200, source


@pytest.mark.slow
@postgres_only
def test_a_browser_sees_no_policy_violation_on_any_page(settings: Settings) -> None:
    user_id, _ = make_user(settings, "viewer")
    mine = add_submission(settings, user_id, result_metrics=metrics(3.0), logs="some output\n")
    add_submission(settings, user_id, status=SubmissionStatus.QUEUED)
    with (
        serve_in_thread(create_app(settings)) as port,
        watched_page(f"http://127.0.0.1:{port}") as watched,  # asserts no violation
    ):
        page = watched.page
        page.goto("/login")
        page.fill("input[name=name]", "viewer")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        for path in ("/", "/leaderboard", f"/submissions/{mine}", "/account", "/task", "/docs"):
            page.goto(path)
            page.wait_for_load_state("networkidle")
        assert page.locator(".swagger-ui .info").count() == 1  # the explorer rendered
        assert watched.violations == []

"""Access rules, route by route: anonymous callers and other participants are refused.

Every route of the app must appear in ROUTES below (the first test fails otherwise), so a new
route cannot ship without an access rule and its test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from edc.config import Settings
from edc.portal.app import create_app
from edc.status import SubmissionStatus
from tests.support.competition import add_submission, bearer, metrics, upload, web_login, zip_of
from tests.support.live_server import People

Rule = Literal["public", "user", "owner", "admin", "worker"]
# (method, path, rule); {id} is replaced by a submission of alice's.
ROUTES: list[tuple[str, str, Rule]] = [
    ("GET", "/", "public"),
    ("GET", "/leaderboard", "public"),
    ("GET", "/task", "public"),
    ("GET", "/starter-kit.zip", "public"),
    ("GET", "/login", "public"),
    ("POST", "/login", "public"),
    ("GET", "/signup", "public"),
    ("POST", "/signup", "public"),
    ("POST", "/logout", "public"),
    ("GET", "/healthz", "public"),
    ("GET", "/readyz", "public"),
    ("GET", "/metrics", "public"),  # unless EDC_METRICS_TOKEN is set
    ("GET", "/api/v1/leaderboard", "public"),
    ("GET", "/api/v1/leaderboard/history", "public"),
    ("GET", "/api/v1/leaderboard/final", "public"),
    ("GET", "/api/v1/tracks", "public"),
    ("GET", "/api/v1/tracks/{name}/leaderboard", "public"),
    ("GET", "/api/v1/tracks/{name}/leaderboard/final", "public"),
    ("GET", "/api/v1/upload-limits", "public"),
    ("POST", "/api/v1/tokens", "public"),
    ("GET", "/account", "user"),
    ("POST", "/account/tokens", "user"),
    ("POST", "/account/tokens/{token}/revoke", "user"),
    ("POST", "/account/team/create", "user"),
    ("POST", "/account/team/join", "user"),
    ("POST", "/account/team/leave", "user"),
    ("GET", "/api/v1/teams/mine", "user"),
    ("POST", "/api/v1/teams", "user"),
    ("POST", "/api/v1/teams/join", "user"),
    ("POST", "/api/v1/teams/leave", "user"),
    ("POST", "/submit", "user"),
    ("POST", "/api/v1/submissions", "user"),
    ("GET", "/api/v1/submissions", "user"),
    ("GET", "/api/v1/me", "user"),
    ("GET", "/submissions/{id}", "owner"),
    ("POST", "/submissions/{id}/cancel", "owner"),
    ("GET", "/api/v1/submissions/{id}", "owner"),
    ("GET", "/api/v1/submissions/{id}/events", "owner"),
    ("GET", "/api/v1/submissions/{id}/logs", "owner"),
    ("GET", "/api/v1/submissions/{id}/archive", "owner"),
    ("POST", "/api/v1/submissions/{id}/cancel", "owner"),
    ("GET", "/admin", "admin"),
    ("POST", "/admin/submissions/{id}/{action}", "admin"),
    ("GET", "/admin/leaderboard.csv", "admin"),
    ("GET", "/admin/submissions.csv", "admin"),
    ("POST", "/admin/finals", "admin"),
    ("POST", "/admin/tracks", "admin"),
    ("GET", "/admin/final-leaderboard.csv", "admin"),
    ("GET", "/api/v1/admin/submissions/{id}", "admin"),
    ("POST", "/api/v1/admin/submissions/{id}/rerun", "admin"),
    ("POST", "/api/v1/admin/submissions/{id}/cancel", "admin"),
    ("POST", "/api/v1/admin/submissions/{id}/disqualify", "admin"),
    ("POST", "/api/v1/admin/submissions/{id}/restore", "admin"),
    ("POST", "/api/v1/admin/submissions/{id}/clear-review", "admin"),
    ("POST", "/api/v1/admin/submissions/{id}/baseline", "admin"),
    ("GET", "/api/v1/admin/queue", "admin"),
    ("GET", "/api/v1/admin/workers", "admin"),
    ("GET", "/api/v1/admin/leaderboard.csv", "admin"),
    ("GET", "/api/v1/admin/submissions.csv", "admin"),
    ("GET", "/api/v1/admin/finals", "admin"),
    ("POST", "/api/v1/admin/finals", "admin"),
    ("POST", "/api/v1/admin/tracks", "admin"),
    ("GET", "/api/v1/admin/final-leaderboard.csv", "admin"),
    # Workers on other hosts, with EDC_WORKER_TOKEN: no account, admins included, gets in.
    ("GET", "/internal/v1/submissions/{id}/archive", "worker"),
]
# Documentation routes FastAPI adds itself.
UNGUARDED = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/static"}


def _declared(path: str) -> str:
    return (
        path.replace("{submission_id}", "{id}")
        .replace("{token_id}", "{token}")
        .replace("{action}", "{action}")
    )


def _routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every route, through included routers."""
    for route in routes:
        if isinstance(route, APIRoute):
            for method in route.methods - {"HEAD"}:
                yield method, prefix + route.path
        elif hasattr(route, "original_router"):
            inner = prefix + route.include_context.prefix
            yield from _routes(route.original_router.routes, inner)
        elif getattr(route, "path", None) not in UNGUARDED:
            pytest.fail(f"unexpected route {route}")


def test_every_route_has_an_access_rule(sqlite_settings: Settings) -> None:
    app = create_app(sqlite_settings)
    found = {(m, _declared(p)) for m, p in _routes(app.routes) if p not in UNGUARDED}
    declared = {(method, path) for method, path, _rule in ROUTES}
    assert found == declared, f"missing rules: {found - declared}; stale rules: {declared - found}"


def _url(path: str, submission_id: int) -> str:
    return (
        path.replace("{id}", str(submission_id))
        .replace("{action}", "rerun")
        .replace("{token}", "1")
        .replace("{name}", "default")
    )


def _call(client: TestClient, method: str, url: str, headers: dict[str, str]) -> int:
    kwargs: dict[str, object] = {"headers": {**headers, "accept": "application/json"}}
    if url.endswith(("/submissions", "/submit")) and method == "POST":
        kwargs["files"] = {"file": ("s.zip", zip_of(), "application/zip")}
    if url.endswith("/disqualify") or url.endswith("/baseline"):
        kwargs["json"] = {}
    return client.request(method, url, follow_redirects=False, **kwargs).status_code  # type: ignore[arg-type]


@pytest.fixture
def alices_submission(rules: Settings, people: People) -> int:
    return add_submission(
        rules, people.alice[0], result_metrics=metrics(5.0), logs="secret", public_logs="ok"
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [(m, p) for m, p, rule in ROUTES if rule not in ("public", "worker")],
)
def test_anonymous_is_refused(
    app_client: TestClient, alices_submission: int, method: str, path: str
) -> None:
    status = _call(app_client, method, _url(path, alices_submission), {})
    assert status in (401, 403), status


@pytest.mark.parametrize(
    ("method", "path"), [(m, p) for m, p, rule in ROUTES if rule in ("owner", "admin")]
)
def test_another_participant_is_refused(
    app_client: TestClient, people: People, alices_submission: int, method: str, path: str
) -> None:
    status = _call(app_client, method, _url(path, alices_submission), bearer(people.bob[1]))
    # Someone else's submission does not exist for bob (404: ids cannot be probed).
    expected = 404 if path.startswith(("/submissions", "/api/v1/submissions")) else 403
    assert status == expected


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, rule in ROUTES if rule == "owner"])
def test_the_owner_and_an_admin_get_through(
    app_client: TestClient, people: People, alices_submission: int, method: str, path: str
) -> None:
    for who in (people.alice, people.root):
        status = _call(app_client, method, _url(path, alices_submission), bearer(who[1]))
        # A finished submission cannot be cancelled (409), and its archive file is not on disk
        # here (404 with its own sentence); both mean the access check let the caller through.
        assert status in (200, 303, 409) or path.endswith("/archive"), (who, status)


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, rule in ROUTES if rule == "worker"])
def test_worker_routes_refuse_every_account(
    app_client: TestClient, people: People, alices_submission: int, method: str, path: str
) -> None:
    for who in ({}, bearer(people.alice[1]), bearer(people.root[1])):
        # 404 while no worker token is configured (the route does not exist), else 401.
        assert _call(app_client, method, _url(path, alices_submission), who) in (401, 404)


def test_another_participants_404_reads_like_a_missing_id(
    app_client: TestClient, people: People, alices_submission: int
) -> None:
    theirs = app_client.get(
        f"/api/v1/submissions/{alices_submission}", headers=bearer(people.bob[1])
    )
    missing = app_client.get("/api/v1/submissions/999999", headers=bearer(people.bob[1]))
    assert theirs.json()["detail"] == f"There is no submission {alices_submission}."
    assert missing.json()["detail"] == "There is no submission 999999."


def test_logs_of_hidden_runs_are_for_admins_only(
    app_client: TestClient, people: People, alices_submission: int
) -> None:
    url = f"/api/v1/submissions/{alices_submission}/logs"
    own = app_client.get(url, headers=bearer(people.alice[1])).json()
    assert own == {"id": alices_submission, "public_logs": "ok", "logs": None}
    full = app_client.get(url, headers=bearer(people.root[1])).json()
    assert full["logs"] == "secret"
    listing = app_client.get("/api/v1/submissions", headers=bearer(people.alice[1])).json()
    assert "logs" not in listing["items"][0] and listing["items"][0]["public_logs"] == "ok"


def test_listing_shows_only_ones_own(
    app_client: TestClient, rules: Settings, people: People, alices_submission: int
) -> None:
    mine = upload(app_client, people.bob[1]).json()["id"]
    bobs = app_client.get("/api/v1/submissions", headers=bearer(people.bob[1])).json()
    assert [item["id"] for item in bobs["items"]] == [mine]
    everyone = app_client.get(
        "/api/v1/submissions?everyone=true", headers=bearer(people.bob[1])
    ).json()
    assert [item["id"] for item in everyone["items"]] == [mine]  # not an admin: ignored
    admin = app_client.get(
        "/api/v1/submissions?everyone=true", headers=bearer(people.root[1])
    ).json()
    assert {item["id"] for item in admin["items"]} == {mine, alices_submission}


def test_a_page_for_someone_elses_submission_is_not_found(
    app_client: TestClient, people: People, alices_submission: int
) -> None:
    web_login(app_client, "bob")
    page = app_client.get(f"/submissions/{alices_submission}", headers={"accept": "text/html"})
    assert page.status_code == 404
    assert "secret" not in page.text


def test_anonymous_page_visit_is_sent_to_log_in(
    app_client: TestClient, alices_submission: int
) -> None:
    page = app_client.get(
        f"/submissions/{alices_submission}",
        headers={"accept": "text/html"},
        follow_redirects=False,
    )
    assert page.status_code == 303
    assert page.headers["location"] == f"/login?next=%2Fsubmissions%2F{alices_submission}"


def test_session_cookie_api_writes_need_the_csrf_header(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    queued = add_submission(rules, people.alice[0], status=SubmissionStatus.QUEUED)
    web_login(app_client, "alice")
    refused = app_client.post(f"/api/v1/submissions/{queued}/cancel")
    assert refused.status_code == 403
    assert "security token" in refused.json()["detail"]

"""Sign-up, log-in, sessions, CSRF and API tokens, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient
from sqlalchemy import select

from edc import db
from edc.config import Settings
from edc.models import ApiToken, User, WebSession
from edc.portal.app import create_app
from edc.portal.auth import SESSION_COOKIE
from tests.support.competition import PASSWORD, bearer, csrf_from, web_login
from tests.support.live_server import People


def signup(client: TestClient, name: str, **extra: str) -> int:
    token = csrf_from(client.get("/login").text)
    form = {
        "csrf_token": token,
        "name": name,
        "password": "s3cret-pass",
        "password_again": "s3cret-pass",
    }
    return client.post("/signup", data={**form, **extra}, follow_redirects=False).status_code


def test_open_sign_up_logs_in_and_stores_an_argon2_hash(
    app_client: TestClient, rules: Settings
) -> None:
    assert signup(app_client, "Newcomer") == 303
    home = app_client.get("/").text
    assert "newcomer" in home and "Submit a decoder" in home
    with db.session_scope(rules) as session:
        user = session.scalar(select(User).where(User.name == "newcomer"))
        assert user is not None and user.password_hash is not None
        assert user.password_hash.startswith("$argon2id$")
        assert "s3cret-pass" not in user.password_hash
    assert signup(TestClient(create_app(rules)), "newcomer") == 409  # names are case-insensitive


def test_invite_and_closed_sign_up(rules: Settings) -> None:
    invited = rules.model_copy(update={"signup": "invite", "invite_code": "letmein"})
    with TestClient(create_app(invited)) as client:
        assert signup(client, "guest", invite_code="wrong") == 403
        assert signup(client, "guest", invite_code="letmein") == 303
    with TestClient(create_app(rules.model_copy(update={"signup": "closed"}))) as client:
        assert "Sign-up is closed" in client.get("/signup").text
        assert signup(client, "nobody") == 403


def test_forms_without_a_matching_csrf_token_are_refused(
    app_client: TestClient, people: People
) -> None:
    app_client.get("/login")  # sets the CSRF cookie
    forged = app_client.post(
        "/login",
        data={"csrf_token": "0" * 64, "name": "alice", "password": PASSWORD},
        follow_redirects=False,
    )
    assert forged.status_code == 403
    # A token from another browser (another CSRF cookie) does not pass either.
    with TestClient(app_client.app) as other:
        foreign = csrf_from(other.get("/login").text)
    stolen = app_client.post(
        "/login",
        data={"csrf_token": foreign, "name": "alice", "password": PASSWORD},
        follow_redirects=False,
    )
    assert stolen.status_code == 403


def test_log_in_rotates_the_session_and_log_out_ends_it(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    web_login(app_client, "alice")
    first = app_client.cookies[SESSION_COOKIE]
    web_login(app_client, "alice")
    second = app_client.cookies[SESSION_COOKIE]
    assert first != second
    with db.session_scope(rules) as session:
        # Only the session's hash is stored, and the replaced one is gone.
        digests = set(session.scalars(select(WebSession.digest)))
    assert len(digests) == 1
    assert hashlib.sha256(second.rsplit(".", 1)[0].encode()).hexdigest() in digests
    # The old cookie no longer logs anyone in.
    with TestClient(app_client.app, cookies={SESSION_COOKIE: first}) as replay:
        assert replay.get("/api/v1/me").status_code == 401
    token = csrf_from(app_client.get("/").text)
    app_client.post("/logout", data={"csrf_token": token})
    assert app_client.get("/api/v1/me").status_code == 401


def test_tampered_session_cookie_is_anonymous(app_client: TestClient, people: People) -> None:
    web_login(app_client, "alice")
    value = app_client.cookies[SESSION_COOKIE]
    assert app_client.get("/api/v1/me").status_code == 200
    app_client.cookies.clear()
    app_client.cookies.set(SESSION_COOKIE, value[:-1] + ("0" if value[-1] != "0" else "1"))
    assert app_client.get("/api/v1/me").status_code == 401


def test_failed_log_ins_are_rate_limited_per_name_and_address(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    body = {"name": "alice", "password": "wrong password"}
    for _ in range(rules.login_max_failures):
        assert app_client.post("/api/v1/tokens", json=body).status_code == 401
    blocked = app_client.post("/api/v1/tokens", json={"name": "alice", "password": PASSWORD})
    assert blocked.status_code == 429
    assert 0 < int(blocked.headers["Retry-After"]) <= rules.login_window_s + 1
    assert "Too many failed log-ins" in blocked.json()["detail"]
    # Another name from the same address is not blocked.
    assert (
        app_client.post("/api/v1/tokens", json={"name": "bob", "password": PASSWORD}).status_code
        == 201
    )


def test_api_tokens_are_shown_once_stored_hashed_and_revocable(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    issued = app_client.post(
        "/api/v1/tokens", json={"name": "alice", "password": PASSWORD, "label": "laptop"}
    )
    assert issued.status_code == 201
    token = issued.json()["token"]
    assert token.startswith("edc_") and issued.json()["user"]["name"] == "alice"
    with db.session_scope(rules) as session:
        rows = session.scalars(select(ApiToken).where(ApiToken.label == "laptop")).all()
        assert [r.digest for r in rows] == [hashlib.sha256(token.encode()).hexdigest()]
        token_id = rows[0].id
    assert app_client.get("/api/v1/me", headers=bearer(token)).json()["user"]["name"] == "alice"

    web_login(app_client, "alice")
    page = app_client.get("/account").text
    assert "laptop" in page and token not in page  # listed, never shown again
    created = app_client.post(
        "/account/tokens", data={"csrf_token": csrf_from(page), "label": "ci"}
    )
    assert created.headers["cache-control"] == "no-store"
    assert 'id="new-token"' in created.text
    app_client.post(f"/account/tokens/{token_id}/revoke", data={"csrf_token": csrf_from(page)})
    refused = app_client.get("/api/v1/me", headers=bearer(token))
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]


def test_log_in_redirects_only_within_the_site(app_client: TestClient, people: People) -> None:
    token = csrf_from(app_client.get("/login").text)
    response = app_client.post(
        "/login",
        data={
            "csrf_token": token,
            "name": "alice",
            "password": PASSWORD,
            "next": "//evil.example/",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/"

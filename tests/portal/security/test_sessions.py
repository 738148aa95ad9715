"""Sessions are rotated at log-in and sign-up, and a session id nobody logged in with is worthless.

``tests/services/test_accounts.py`` covers a second log-in replacing the first session and
log-out; these cover session fixation (an id planted in the browser before log-in, whether
forged or another user's real one), sign-up, the CSRF token's binding to the session, the
replay of a logged-out cookie, and the cookie's flags.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from edc import security
from edc.config import Settings
from edc.portal.auth import SESSION_COOKIE, SESSION_PURPOSE
from tests.portal.security.conftest import People
from tests.support.competition import PASSWORD, csrf_from, web_login


def planted_in(browser: TestClient, cookie: str) -> TestClient:
    """Put a session cookie into the browser's jar where the portal's own would go."""
    browser.cookies.set(SESSION_COOKIE, cookie, domain="testserver.local", path="/")
    return browser


def who(app: FastAPI, cookie: str) -> int | str:
    """The user name a session cookie logs in as, or the status when it logs in nobody."""
    with TestClient(app, cookies={SESSION_COOKIE: cookie}) as replay:
        response = replay.get("/api/v1/me")
    return response.json()["user"]["name"] if response.status_code == 200 else response.status_code


def test_a_planted_forged_session_id_is_replaced_at_log_in(
    app: FastAPI, secure_settings: Settings, people: People
) -> None:
    # An attacker cannot make a valid id, but can sign one if the key leaked: either way the
    # browser must leave log-in with an id the attacker does not know.
    planted = security.sign(
        secure_settings.secret_key, "attacker-chosen-id", purpose=SESSION_PURPOSE
    )
    with planted_in(TestClient(app), planted) as browser:
        assert browser.get("/api/v1/me").status_code == 401
        web_login(browser, "alice")
        after = browser.cookies[SESSION_COOKIE]
        assert browser.get("/api/v1/me").json()["user"]["name"] == "alice"
    assert after != planted
    assert who(app, planted) == 401
    assert who(app, after) == "alice"


def test_another_users_planted_session_is_replaced_and_ended_at_log_in(
    app: FastAPI, people: People
) -> None:
    with TestClient(app) as attacker:
        web_login(attacker, "bob")
        bobs = attacker.cookies[SESSION_COOKIE]
    assert who(app, bobs) == "bob"
    # The victim's browser holds bob's cookie (planted), then alice logs in on it.
    with planted_in(TestClient(app), bobs) as victim:
        assert victim.get("/api/v1/me").json()["user"]["name"] == "bob"  # the plant took
        web_login(victim, "alice")
        alices = victim.cookies[SESSION_COOKIE]
    assert alices != bobs
    assert who(app, alices) == "alice"
    # The planted id never becomes alice's, and the session it named is over.
    assert who(app, bobs) == 401


def test_sign_up_starts_a_fresh_session(app: FastAPI, secure_settings: Settings) -> None:
    planted = security.sign(
        secure_settings.secret_key, "fixed-by-attacker", purpose=SESSION_PURPOSE
    )
    with planted_in(TestClient(app), planted) as browser:
        token = csrf_from(browser.get("/signup").text)
        form = {
            "csrf_token": token,
            "name": "carol",
            "password": "a long enough password",
            "password_again": "a long enough password",
        }
        assert browser.post("/signup", data=form, follow_redirects=False).status_code == 303
        after = browser.cookies[SESSION_COOKIE]
    assert after != planted
    assert who(app, after) == "carol"
    assert who(app, planted) == 401


def test_a_csrf_token_from_before_log_in_does_not_pass_after_it(
    app: FastAPI, people: People
) -> None:
    with TestClient(app) as browser:
        anonymous_token = csrf_from(browser.get("/login").text)
        web_login(browser, "alice")
        stale = browser.post(
            "/account/tokens",
            data={"csrf_token": anonymous_token, "label": "x"},
            follow_redirects=False,
        )
        assert stale.status_code == 403
        fresh = csrf_from(browser.get("/account").text)
        assert fresh != anonymous_token
        made = browser.post("/account/tokens", data={"csrf_token": fresh, "label": "x"})
        assert made.status_code == 200 and 'id="new-token"' in made.text


def test_a_logged_out_cookie_replayed_logs_in_nobody(app: FastAPI, people: People) -> None:
    with TestClient(app) as browser:
        web_login(browser, "alice")
        cookie = browser.cookies[SESSION_COOKIE]
        token = csrf_from(browser.get("/").text)
        browser.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert who(app, cookie) == 401


def test_the_session_cookie_is_http_only_same_site_and_secure_outside_dev(
    secure_settings: Settings, people: People
) -> None:
    from edc.portal.app import create_app

    for settings, secure in (
        (secure_settings, False),
        (secure_settings.model_copy(update={"cookie_secure": True}), True),
    ):
        # Over https, as a browser would be: a Secure cookie is not sent back over http.
        with TestClient(create_app(settings), base_url="https://testserver") as browser:
            login_page = browser.get("/login").text
            response = browser.post(
                "/login",
                data={"csrf_token": csrf_from(login_page), "name": "alice", "password": PASSWORD},
                follow_redirects=False,
            )
        cookie = next(
            value
            for value in response.headers.get_list("set-cookie")
            if value.startswith(f"{SESSION_COOKIE}=")
        )
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert "httponly" in flags and "samesite=lax" in flags and "path=/" in flags
        assert ("secure" in flags) is secure

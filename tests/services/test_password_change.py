"""A changed password locks a thief out: the account's browser sessions end, on request its API
tokens are revoked too, and the addresses it logged in from lose their exemption from the name's
log-in throttle."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from edc import db
from edc.config import Settings
from edc.errors import NotAuthenticated, RateLimited
from edc.models import User
from edc.services import accounts
from tests.support.competition import PASSWORD, bearer, web_login
from tests.support.live_server import People


def change_password(settings: Settings, user_id: int, *, revoke: bool) -> accounts.Revoked:
    with db.session_scope(settings) as session:
        user = session.get(User, user_id)
        assert user is not None
        return accounts.set_password(
            session, user=user, password="a brand new passphrase", revoke_api_tokens=revoke
        )


@pytest.mark.parametrize("revoke", [False, True])
def test_a_password_change_ends_sessions_and_optionally_tokens(
    app_client: TestClient, rules: Settings, people: People, revoke: bool
) -> None:
    web_login(app_client, "alice")
    assert app_client.get("/api/v1/me").status_code == 200
    bob_token = people.bob[1]

    revoked = change_password(rules, people.alice[0], revoke=revoke)

    assert revoked == accounts.Revoked(
        web_sessions=1, api_tokens=1 if revoke else 0, known_addresses=1
    )
    assert app_client.get("/api/v1/me").status_code == 401  # the old cookie is dead
    app_client.cookies.clear()
    token_answer = app_client.get("/api/v1/me", headers=bearer(people.alice[1])).status_code
    assert token_answer == (401 if revoke else 200)
    # Nobody else's access changes.
    assert app_client.get("/api/v1/me", headers=bearer(bob_token)).status_code == 200
    # The new password works.
    issued = app_client.post(
        "/api/v1/tokens", json={"name": "alice", "password": "a brand new passphrase"}
    )
    assert issued.status_code == 201


def test_a_password_change_takes_the_thiefs_address_off_the_exempt_list(
    rules: Settings, people: People
) -> None:
    throttling = rules.model_copy(
        update={"login_max_failures_per_name": 3, "login_throttle_interval_s": 60.0}
    )
    thief = "10.8.0.66"

    def log_in(password: str, address: str) -> None:
        accounts.log_in(throttling, name="alice", password=password, client_address=address)

    log_in(PASSWORD, thief)  # with the stolen password: a known address of the name now
    for i in range(5):  # a botnet gets the name throttled
        with pytest.raises((NotAuthenticated, RateLimited)):
            log_in("wrong", f"10.8.1.{i}")
    # The thief's guesses are still checked, throttle or not.
    accounts.refuse_if_blocked(throttling, name="alice", client_address=thief)
    with pytest.raises(NotAuthenticated):
        log_in("a guess", thief)

    revoked = change_password(throttling, people.alice[0], revoke=False)

    assert revoked.known_addresses == 1
    # Throttled like any address: in this process's memory of the throttle...
    with pytest.raises(RateLimited, match="address you have logged in from before"):
        accounts.refuse_if_blocked(throttling, name="alice", client_address=thief)
    # ...and in another process's, which looks in the database: even the new password is
    # refused unchecked.
    accounts.forget_blocked()
    with pytest.raises(RateLimited, match="address you have logged in from before"):
        log_in("a brand new passphrase", thief)

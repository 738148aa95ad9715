"""A changed password locks a thief out: the account's browser sessions end, and on request its
API tokens are revoked too."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from edc import db
from edc.config import Settings
from edc.models import User
from edc.services import accounts
from tests.support.competition import bearer, web_login
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

    assert revoked == accounts.Revoked(web_sessions=1, api_tokens=1 if revoke else 0)
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

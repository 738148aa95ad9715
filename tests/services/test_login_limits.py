"""Log-in costs an attacker more than it costs us: parallel guesses cannot outrun the limit, one
address cannot spray guesses across accounts, password checks are bounded, and an attacked
account's owner can still log in from elsewhere."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from edc import db
from edc.config import Settings
from edc.errors import EdcError, NotAuthenticated, RateLimited
from edc.portal.app import create_app
from edc.services import accounts
from tests.services.conftest import People
from tests.support.competition import PASSWORD


def attempt(settings: Settings, name: str, password: str, address: str) -> type[EdcError] | None:
    try:
        accounts.log_in(settings, name=name, password=password, client_address=address)
    except EdcError as exc:
        return type(exc)
    return None


def test_parallel_wrong_passwords_for_one_name_get_no_more_than_the_limit(
    rules: Settings, people: People
) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(lambda _: attempt(rules, "alice", "wrong", "10.0.0.1"), range(40)))
    assert outcomes.count(NotAuthenticated) <= rules.login_max_failures
    assert outcomes.count(RateLimited) >= 40 - rules.login_max_failures
    assert set(outcomes) <= {NotAuthenticated, RateLimited}


def test_one_address_cannot_spray_guesses_across_names(rules: Settings, people: People) -> None:
    s = rules.model_copy(update={"login_max_failures_per_address": 4})
    names = [f"nobody{i}" for i in range(4)]
    assert [attempt(s, n, "guess", "10.0.0.2") for n in names] == [NotAuthenticated] * 4
    # A fifth name, even a real one with its right password, is refused from that address...
    assert attempt(s, "alice", PASSWORD, "10.0.0.2") is RateLimited
    # ...while its owner, elsewhere, is not locked out.
    assert attempt(s, "alice", PASSWORD, "10.0.0.3") is None


def test_an_attacked_name_stays_open_to_its_owner_at_another_address(
    rules: Settings, people: People
) -> None:
    for _ in range(rules.login_max_failures):
        assert attempt(rules, "alice", "wrong", "10.0.0.4") is NotAuthenticated
    assert attempt(rules, "alice", PASSWORD, "10.0.0.4") is RateLimited
    assert attempt(rules, "alice", PASSWORD, "10.0.0.5") is None


def test_known_and_unknown_names_get_the_same_answer(rules: Settings, people: People) -> None:
    answers = []
    for name in ("alice", "no-such-user"):
        with pytest.raises(NotAuthenticated) as info:
            accounts.log_in(rules, name=name, password="wrong", client_address="10.0.0.6")
        answers.append(info.value.message)
    assert answers[0] == answers[1]


def test_password_checks_beyond_the_bound_are_refused_at_once(
    rules: Settings, people: People
) -> None:
    s = rules.model_copy(update={"login_concurrency": 1})
    busy = accounts._password_checks(1)
    assert busy.acquire(timeout=5)  # a check in progress holds the only slot
    try:
        began = time.monotonic()
        with pytest.raises(RateLimited, match="at once") as info:
            accounts.log_in(s, name="alice", password=PASSWORD, client_address="10.0.0.7")
        assert info.value.retry_after_s == 1
        assert time.monotonic() - began < accounts.CHECK_WAIT_S + 2
    finally:
        busy.release()
    # The refused attempt was not a wrong password: once the slot is free, the owner gets in.
    assert attempt(s, "alice", PASSWORD, "10.0.0.7") is None


def test_a_blocked_address_is_refused_from_memory_without_the_database(
    rules: Settings, people: People
) -> None:
    for _ in range(rules.login_max_failures):
        assert attempt(rules, "alice", "wrong", "10.0.0.8") is NotAuthenticated
    assert attempt(rules, "alice", "wrong", "10.0.0.8") is RateLimited  # learnt from the database
    statements: list[str] = []
    engine = db.get_engine(rules)
    record = lambda *args: statements.append(args[2])  # noqa: E731  (conn, cursor, statement, ...)
    event.listen(engine, "before_cursor_execute", record)
    try:
        with pytest.raises(RateLimited) as info:
            accounts.log_in(rules, name="alice", password="wrong", client_address="10.0.0.8")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert statements == []  # answered from memory
    assert info.value.retry_after_s > 0
    # Other names and addresses are not affected by what this one learnt.
    accounts.refuse_if_blocked(rules, name="alice", client_address="10.0.0.9")


def test_log_ins_beyond_the_bound_wait_outside_the_thread_pool_and_get_429(
    rules: Settings, people: People
) -> None:
    s = rules.model_copy(update={"login_concurrency": 1})
    busy = accounts._password_checks(1)
    with TestClient(create_app(s)) as client:
        assert busy.acquire(timeout=5)  # a check in progress holds the only slot
        try:
            began = time.monotonic()
            with ThreadPoolExecutor(max_workers=4) as pool:
                answers = list(
                    pool.map(
                        lambda _: client.post(
                            "/api/v1/tokens", json={"name": "alice", "password": PASSWORD}
                        ),
                        range(4),
                    )
                )
            elapsed = time.monotonic() - began
        finally:
            busy.release()
        assert [a.status_code for a in answers] == [429] * 4
        assert all("at once" in a.json()["detail"] for a in answers)
        assert elapsed < 4 * accounts.CHECK_WAIT_S + 2  # refused promptly, not queued for long
        # And once the slot is free, the owner gets in.
        ok = client.post("/api/v1/tokens", json={"name": "alice", "password": PASSWORD})
        assert ok.status_code == 201

"""Log-in costs an attacker more than it costs us: parallel guesses cannot outrun the limit, one
address cannot spray guesses across accounts, many addresses guessing one name are slowed down
to one check an interval, password checks are bounded, and an attacked account's owner can
still log in: from elsewhere, or from an address it logged in from before."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from edc import db, security
from edc.config import Settings
from edc.errors import EdcError, NotAuthenticated, RateLimited
from edc.models import LoginFailure, utcnow
from edc.portal.app import create_app
from edc.services import accounts
from tests.support.competition import PASSWORD
from tests.support.live_server import People
from tests.support.threaded_server import serve_in_thread


def attempt(
    settings: Settings, name: str, password: str, address: str, now: datetime | None = None
) -> type[EdcError] | None:
    try:
        accounts.log_in(settings, name=name, password=password, client_address=address, now=now)
    except EdcError as exc:
        return type(exc)
    return None


@pytest.fixture
def throttling(rules: Settings) -> Settings:
    """A name is throttled after 3 failures over all addresses: one check a minute."""
    return rules.model_copy(
        update={"login_max_failures_per_name": 3, "login_throttle_interval_s": 60.0}
    )


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The passwords that were checked (argon2 run), in order: the real check, watched."""
    passwords: list[str] = []
    verify = security.verify_password

    def watched(password_hash: str | None, password: str) -> bool:
        passwords.append(password)
        return verify(password_hash, password)

    monkeypatch.setattr(security, "verify_password", watched)
    return passwords


def name_failures(settings: Settings, name: str) -> int:
    with db.session_scope(settings) as session:
        key = accounts._name_key(name)
        return session.scalar(select(func.count()).where(LoginFailure.key == key)) or 0


@contextmanager
def live_portal(settings: Settings) -> Iterator[str]:
    """A real uvicorn server, which believes X-Forwarded-For from 127.0.0.1 (as behind a proxy)."""
    with serve_in_thread(create_app(settings)) as port:
        yield f"http://127.0.0.1:{port}"


def post_token(url: str, name: str, password: str, address: str) -> httpx.Response:
    return httpx.post(
        f"{url}/api/v1/tokens",
        json={"name": name, "password": password},
        headers={"X-Forwarded-For": address},
        timeout=30,
    )


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


def test_many_addresses_against_one_name_are_throttled_after_the_threshold(
    throttling: Settings, people: People, checked: list[str]
) -> None:
    now = utcnow()
    outcomes = [attempt(throttling, "alice", "wrong", f"10.1.0.{i}", now) for i in range(10)]
    # Three failures, then the name's one check of the interval; the rest are refused.
    assert outcomes == [NotAuthenticated] * 4 + [RateLimited] * 6
    # The refused attempts ran no password check and count for nothing.
    assert len(checked) == 4
    assert name_failures(throttling, "alice") == 4
    with pytest.raises(RateLimited, match="address you have logged in from before") as info:
        accounts.log_in(throttling, name="alice", password=PASSWORD, client_address="10.1.0.50")
    assert 0 < info.value.retry_after_s <= 61
    # Another portal process, which has learnt nothing, refuses from the database alike.
    accounts.forget_blocked()
    assert attempt(throttling, "alice", "wrong", "10.1.0.99", now) is RateLimited
    assert len(checked) == 4
    assert name_failures(throttling, "alice") == 4
    # An interval later the name gets one more check, and only one.
    later = now + timedelta(seconds=61)
    accounts.forget_blocked()
    outcomes = [attempt(throttling, "alice", "wrong", f"10.1.1.{i}", later) for i in range(3)]
    assert outcomes == [NotAuthenticated, RateLimited, RateLimited]
    assert len(checked) == 5


def test_parallel_guesses_from_many_addresses_get_one_check_past_the_threshold(
    throttling: Settings, people: People, checked: list[str]
) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(
            pool.map(lambda i: attempt(throttling, "alice", "wrong", f"10.5.0.{i}"), range(30))
        )
    assert set(outcomes) <= {NotAuthenticated, RateLimited}
    assert len(checked) <= throttling.login_max_failures_per_name + 1
    assert outcomes.count(NotAuthenticated) == len(checked)


def test_the_owner_logs_in_from_an_address_used_before_while_the_name_is_throttled(
    throttling: Settings, people: People
) -> None:
    with live_portal(throttling) as url:
        assert post_token(url, "alice", PASSWORD, "10.2.0.1").status_code == 201  # her address
        for i in range(6):  # a botnet, each guess from a new address
            post_token(url, "alice", "wrong", f"10.2.1.{i}")
        # From a new address even the right password is refused, unchecked...
        refused = post_token(url, "alice", PASSWORD, "10.2.2.1")
        assert refused.status_code == 429
        assert "address you have logged in from before" in refused.json()["detail"]
        # ...while from hers it is checked, throttle or not: in this process's memory...
        assert post_token(url, "alice", PASSWORD, "10.2.0.1").status_code == 201
        # ...and in another's, which looks in the database.
        accounts.forget_blocked()
        assert post_token(url, "alice", PASSWORD, "10.2.0.1").status_code == 201
        assert post_token(url, "alice", "wrong", "10.2.0.1").status_code == 401
        assert post_token(url, "alice", PASSWORD, "10.2.2.1").status_code == 429


def test_an_unknown_name_is_throttled_the_same_way_with_the_same_answers(
    throttling: Settings, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen = utcnow().replace(microsecond=0)
    monkeypatch.setattr(accounts, "utcnow", lambda: frozen)

    def answers(url: str, name: str, network: int) -> list[tuple[int, str, str | None]]:
        seen = []
        for i in range(7):
            accounts.forget_blocked()  # each answer from the database: no clock of this process
            answer = post_token(url, name, "wrong", f"10.3.{network}.{i}")
            seen.append((answer.status_code, answer.text, answer.headers.get("Retry-After")))
        return seen

    with live_portal(throttling) as url:
        known, unknown = answers(url, "alice", 0), answers(url, "no-such-user", 1)
    assert [status for status, _, _ in known] == [401] * 4 + [429] * 3
    assert known == unknown


def test_a_rate_limited_known_name_and_an_unknown_name_get_identical_answers(
    rules: Settings, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen = utcnow().replace(microsecond=0)
    monkeypatch.setattr(accounts, "utcnow", lambda: frozen)

    def over_the_limit(client: TestClient, name: str) -> httpx.Response:
        for _ in range(rules.login_max_failures):
            body = {"name": name, "password": "wrong"}
            assert client.post("/api/v1/tokens", json=body).status_code == 401
        return client.post("/api/v1/tokens", json={"name": name, "password": "wrong"})

    with TestClient(create_app(rules)) as client:
        known, unknown = over_the_limit(client, "alice"), over_the_limit(client, "no-such-user")
    assert known.status_code == unknown.status_code == 429
    assert known.content == unknown.content
    assert known.headers["Retry-After"] == unknown.headers["Retry-After"]


def test_a_throttled_name_is_refused_on_the_event_loop_but_from_its_known_addresses(
    throttling: Settings, people: People
) -> None:
    assert attempt(throttling, "alice", PASSWORD, "10.6.0.1") is None  # her address
    for i in range(5):
        attempt(throttling, "alice", "wrong", f"10.6.1.{i}")
    # What the routes ask before a log-in takes a thread: no database, no password check.
    with pytest.raises(RateLimited, match="address you have logged in from before"):
        accounts.refuse_if_blocked(throttling, name="alice", client_address="10.6.2.1")
    accounts.refuse_if_blocked(throttling, name="alice", client_address="10.6.0.1")
    assert attempt(throttling, "alice", PASSWORD, "10.6.0.1") is None

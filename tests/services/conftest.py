"""Fixtures for the competition's tests: the app on both databases, users, a live server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from fastapi.testclient import TestClient

from edc.config import Settings
from edc.portal.app import create_app
from tests.support.competition import make_user


@pytest.fixture
def rules(settings: Settings) -> Settings:
    """The shared settings with small, explicit limits."""
    return settings.model_copy(update={"submissions_per_day": 3, "max_queued_per_user": 2})


@pytest.fixture
def app_client(rules: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(rules)) as client:
        yield client


@dataclass
class People:
    alice: tuple[int, str]
    bob: tuple[int, str]
    root: tuple[int, str]


@pytest.fixture
def people(rules: Settings) -> People:
    return People(
        alice=make_user(rules, "alice"),
        bob=make_user(rules, "bob"),
        root=make_user(rules, "root", admin=True, password=None),
    )


@dataclass
class LiveServer:
    url: str
    settings: Settings


@pytest.fixture
def live_server(rules: Settings) -> Iterator[LiveServer]:
    """The portal on a real uvicorn server in a thread (for clients that speak real HTTP)."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(rules), host="127.0.0.1", port=0, log_level="warning", ws="none")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield LiveServer(url=f"http://127.0.0.1:{port}", settings=rules)
    server.should_exit = True
    thread.join(timeout=10)

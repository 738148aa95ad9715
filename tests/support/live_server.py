"""The portal for the tests that drive it as a participant meets it: its settings with small
limits, the app on both databases, alice, bob and root, and the portal on a real server.

Registered for every folder by ``tests/conftest.py`` (``pytest_plugins``); a test module imports
only the records (``LiveServer``, ``People``) from here, for its annotations.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from edc.config import Settings
from edc.portal.app import create_app
from tests.support.competition import make_user
from tests.support.threaded_server import serve_in_thread


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
    with serve_in_thread(create_app(rules)) as port:
        yield LiveServer(url=f"http://127.0.0.1:{port}", settings=rules)

"""Liveness and readiness against real and deliberately unreachable services."""

from __future__ import annotations

import socket

from fastapi.testclient import TestClient

from edc.config import Settings
from edc.portal.app import create_app


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_healthz_answers_without_any_service(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{closed_port()}/0"})
    with TestClient(create_app(down)) as client:
        response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_when_database_and_redis_answer(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "queue": "ok"}}


def test_readyz_names_redis_when_it_is_down(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{closed_port()}/0"})
    with TestClient(create_app(down)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "detail": "Not ready: the job queue (Redis) is unreachable.",
        "code": "not_ready",
        "checks": {"database": "ok", "queue": "down"},
    }


def test_readyz_names_the_database_when_it_is_down(sqlite_settings: Settings) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/nothing"
    down = sqlite_settings.model_copy(update={"database_url": url})
    with TestClient(create_app(down)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["detail"] == "Not ready: the database is unreachable."
    assert response.json()["checks"] == {"database": "down", "queue": "ok"}


def test_readyz_names_both(sqlite_settings: Settings) -> None:
    down = sqlite_settings.model_copy(
        update={
            "database_url": f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/nothing",
            "redis_url": f"redis://127.0.0.1:{closed_port()}/0",
        }
    )
    with TestClient(create_app(down)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["detail"] == (
        "Not ready: the database and the job queue (Redis) are unreachable."
    )

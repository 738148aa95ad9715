"""Structured logs: JSON lines that carry the submission and worker they were written for."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from fastapi.testclient import TestClient

from edc.config import Settings
from edc.observability.logging import configure_logging, current_context, log_context
from edc.observability.prometheus import record_outcome
from edc.portal.app import create_app
from edc.status import FailureReason, SubmissionStatus

log = logging.getLogger("edc.test.observability")


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """JSON logging into a file (a file, not a buffer, so a forked child's lines arrive too)."""
    path = tmp_path / "log.jsonl"
    root = logging.getLogger()
    level = root.level
    with path.open("a", encoding="utf-8", buffering=1) as stream:
        handler = configure_logging(json=True, stream=stream)
        try:
            yield path
        finally:
            root.removeHandler(handler)
            root.setLevel(level)


def entries(path: Path, logger: str | None = None) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [e for e in found if logger is None or e["logger"] == logger]


def test_lines_inside_a_context_carry_its_fields(log_file: Path) -> None:
    log.info("before")
    with log_context(worker_id="gpu3-w-1a2b3c"):
        with log_context(submission_id=42, attempt=None):
            log.info("evaluating %s", "now")
        log.warning("between")
    log.info("after")

    before, inside, between, after = entries(log_file, log.name)
    assert set(inside) == {"time", "level", "logger", "message", "submission_id", "worker_id"}
    assert inside["message"] == "evaluating now"
    assert (inside["submission_id"], inside["worker_id"]) == (42, "gpu3-w-1a2b3c")
    assert inside["level"] == "INFO" and inside["logger"] == log.name
    assert inside["time"].endswith("+00:00")
    assert between["worker_id"] == "gpu3-w-1a2b3c" and "submission_id" not in between
    assert "worker_id" not in before and "worker_id" not in after
    assert current_context() == {}


def test_one_object_per_line_whatever_the_record(log_file: Path) -> None:
    with log_context(submission_id=7):
        log.info("two\nlines", extra={"submission_id": 8, "path": Path("/x")})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    text = log_file.read_text(encoding="utf-8")
    assert len(text.splitlines()) == 2
    first, second = entries(log_file, log.name)
    assert first["message"] == "two\nlines"
    assert first["submission_id"] == 8  # extra= wins over the context
    assert first["path"] == "/x"  # not JSON itself: logged as its text
    assert second["level"] == "ERROR" and second["submission_id"] == 7
    assert "RuntimeError: boom" in second["exception"]


def test_text_lines_show_the_fields_too() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging(json=False, stream=stream)
    try:
        with log_context(submission_id=5, worker_id="w1"):
            log.info("hello")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    line = stream.getvalue().strip()
    assert line.endswith(f"INFO {log.name}: hello [submission_id=5 worker_id=w1]")


def test_configuring_again_replaces_only_its_own_handler() -> None:
    root = logging.getLogger()
    level = root.level
    others = list(root.handlers)
    first = configure_logging(json=True, stream=io.StringIO())
    second = configure_logging(json=False, stream=io.StringIO())
    try:
        assert first not in root.handlers
        assert root.handlers == [*others, second]
    finally:
        root.removeHandler(second)
        root.setLevel(level)


def test_the_context_follows_into_threads_and_forked_children(log_file: Path) -> None:
    def in_thread() -> None:
        log.info("in a thread")

    async def main() -> None:
        with log_context(submission_id=9, worker_id="w-thread"):
            await anyio.to_thread.run_sync(in_thread)

    anyio.run(main)

    # An RQ work-horse is a fork of its worker: the worker's context goes with it.
    with log_context(worker_id="w-fork"):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                with log_context(submission_id=10):
                    log.info("in the work-horse")
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    threaded, forked = entries(log_file, log.name)
    assert (threaded["submission_id"], threaded["worker_id"]) == (9, "w-thread")
    assert (forked["submission_id"], forked["worker_id"]) == (10, "w-fork")


def test_record_outcome_logs_the_outcome_in_context(log_file: Path) -> None:
    with log_context(submission_id=3, worker_id="w9"):
        record_outcome(SubmissionStatus.FAILED, FailureReason.CRASHED)
        record_outcome(SubmissionStatus.COMPLETED, None)
    failed, completed = entries(log_file, "edc.observability.prometheus")
    assert failed["message"] == "submission failed (crashed)"
    assert (failed["outcome"], failed["reason"]) == ("failed", "crashed")
    assert (failed["submission_id"], failed["worker_id"]) == (3, "w9")
    assert (completed["outcome"], completed["reason"]) == ("completed", "")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_portal_lines_about_a_submission_carry_its_id(
    log_file: Path, sqlite_settings: Settings
) -> None:
    # With the database down, the route's own warning is written while it serves submission 42.
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/nothing"
    down = sqlite_settings.model_copy(update={"database_url": url})
    with TestClient(create_app(down)) as client:
        response = client.get(
            "/api/v1/submissions/42", headers={"Authorization": "Bearer some-token"}
        )
        client.get("/healthz")
    assert response.status_code == 503

    warnings = [e for e in entries(log_file, "edc.db") if e["level"] == "WARNING"]
    inside = [e for e in warnings if e.get("submission_id") == 42]
    assert inside, warnings
    access = entries(log_file, "edc.portal.http")
    assert len(access) == 1  # health checks are not logged at INFO
    line = access[0]
    assert line["submission_id"] == 42
    assert line["route"] == "/api/v1/submissions/{submission_id}"
    assert (line["method"], line["status"]) == ("GET", 503)
    assert line["request_id"] == inside[0]["request_id"]
    assert line["duration_ms"] > 0

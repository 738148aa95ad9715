"""Live views are bounded: per participant and per portal, one shared poll per submission, a
stream whose client left gives its place back, an idle stream is kept alive by comments, and
every stream ends after its maximum life."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest
from fastapi import FastAPI

from edc.config import Settings
from edc.portal import events
from edc.portal.app import create_app
from edc.portal.events import StreamHub
from edc.status import SubmissionStatus
from tests.support.competition import add_submission, bearer, make_user
from tests.support.databases import postgres_only
from tests.support.threaded_server import serve_in_thread


@pytest.fixture
def bounded(settings: Settings) -> Settings:
    return settings.model_copy(update={"sse_per_user": 2, "sse_total": 3})


@contextmanager
def portal(settings: Settings) -> Iterator[tuple[FastAPI, str]]:
    app = create_app(settings)
    with serve_in_thread(app) as port:
        yield app, f"http://127.0.0.1:{port}"


def open_stream(stack: ExitStack, url: str, token: str, submission_id: int) -> httpx.Response:
    response = stack.enter_context(
        httpx.stream(
            "GET",
            f"{url}/api/v1/submissions/{submission_id}/events",
            headers=bearer(token),
            timeout=10,
        )
    )
    return response


def wait_for(condition: object, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


def test_a_participant_over_the_cap_is_refused_and_the_portal_too(bounded: Settings) -> None:
    alice, alice_token = make_user(bounded, "alice")
    bob, bob_token = make_user(bounded, "bob")
    carol, carol_token = make_user(bounded, "carol")
    rows = {
        who: add_submission(bounded, who, status=SubmissionStatus.QUEUED)
        for who in (alice, bob, carol)
    }
    with portal(bounded) as (app, url), ExitStack() as streams:
        for _ in range(2):
            assert open_stream(streams, url, alice_token, rows[alice]).status_code == 200
        refused = httpx.get(
            f"{url}/api/v1/submissions/{rows[alice]}/events", headers=bearer(alice_token)
        )
        assert refused.status_code == 429
        assert "live views open" in refused.json()["detail"]
        assert int(refused.headers["Retry-After"]) > 0
        # Refused before anything is read: a submission that does not exist gets the same 429.
        unread = httpx.get(f"{url}/api/v1/submissions/987654/events", headers=bearer(alice_token))
        assert unread.status_code == 429
        # Bob has his own allowance, until the portal's is spent.
        assert open_stream(streams, url, bob_token, rows[bob]).status_code == 200
        full = httpx.get(
            f"{url}/api/v1/submissions/{rows[carol]}/events", headers=bearer(carol_token)
        )
        assert full.status_code == 429
        assert "as many live views as it can" in full.json()["detail"]
        hub: StreamHub = app.state.streams
        assert hub.open_streams == 3


def test_a_stream_whose_client_left_gives_its_place_back(bounded: Settings) -> None:
    alice, token = make_user(bounded, "alice")
    row = add_submission(bounded, alice, status=SubmissionStatus.QUEUED)
    with portal(bounded) as (app, url):
        hub: StreamHub = app.state.streams
        for _ in range(3):  # more than the cap, one after another
            with ExitStack() as streams:
                response = open_stream(streams, url, token, row)
                assert response.status_code == 200
                next(response.iter_lines())
            wait_for(lambda: hub.open_streams == 0)


@postgres_only
def test_streams_of_one_submission_share_one_poll(settings: Settings) -> None:
    s = settings.model_copy(update={"sse_per_user": 10})
    alice, token = make_user(s, "alice")
    row = add_submission(s, alice, status=SubmissionStatus.QUEUED)
    with portal(s) as (app, url), ExitStack() as streams:
        for _ in range(6):  # unread: the server writes each stream's events all the same
            assert open_stream(streams, url, token, row).status_code == 200
        hub: StreamHub = app.state.streams
        watch = hub._watches[row]
        began, polls_before = time.monotonic(), watch.polls
        time.sleep(3)
        polls = watch.polls - polls_before
        elapsed = time.monotonic() - began
        # One poll a second for the submission, not one per stream (six streams: ~18).
        assert polls <= elapsed / hub.poll_s + 2, polls


@postgres_only
def test_an_idle_stream_sends_keep_alives_and_ends_after_its_maximum_life(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings.model_copy(update={"sse_max_s": 2.5})
    monkeypatch.setattr(events, "KEEPALIVE_S", 0.2)
    alice, token = make_user(s, "alice")
    row = add_submission(s, alice, status=SubmissionStatus.QUEUED)  # it will not move
    with portal(s) as (app, url), ExitStack() as streams:
        began = time.monotonic()
        response = open_stream(streams, url, token, row)
        assert response.status_code == 200
        lines = list(response.iter_lines())  # until the portal ends the stream
        lived = time.monotonic() - began
        hub: StreamHub = app.state.streams
        wait_for(lambda: hub.open_streams == 0)
    assert lines[0] == "retry: 3000"
    assert "event: submission" in lines
    assert ": keep-alive" in lines
    assert "event: end" not in lines  # not final: cut by its age, and the browser reconnects
    assert s.sse_max_s <= lived < s.sse_max_s + 5

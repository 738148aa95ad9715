"""One participant cannot read or change another's submissions, archives, logs, results or tokens.

Every route the app has is called as alice, by API token and by browser session (with a valid
CSRF token, so a refusal is never just the missing token), with bob's ids in every path
parameter: each of bob's submissions in each state, and his API token. Each answer must refuse,
say nothing of bob's, and read exactly like the answer for an id that does not exist (so ids
cannot be probed); afterwards every row and file of bob's is as it was. Routes are found by
walking the app, so a route added later is covered without editing this file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, get_args
from urllib.parse import unquote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from edc import db, storage
from edc.config import Settings
from edc.models import ApiToken, Submission, WebSession
from edc.portal.deps import MAX_ROW_ID
from edc.portal.routes.admin_pages import Action
from tests.portal.security.conftest import BOBS_SECRET, People
from tests.portal.security.routes import Endpoint, endpoints
from tests.support.competition import PASSWORD, bearer, csrf_from, web_login
from tests.support.databases import postgres_only

# Ids no row has: the answer for bob's ids must read exactly like these.
MISSING_IDS = (MAX_ROW_ID, 987_654)
ALERT = re.compile(r'class="alert[^"]*"[^>]*>(.*?)</div>', re.S)


@dataclass
class Caller:
    """Alice through one door: her API token, or her browser's session cookie."""

    kind: str
    client: TestClient
    csrf: str | None

    def call(self, endpoint: Endpoint, url: str) -> Any:
        # A browser asks for pages (refusals come as pages), a script for JSON.
        headers = {"accept": "application/json" if self.csrf is None else "text/html"}
        kwargs: dict[str, Any] = {}
        if self.csrf is not None:
            headers["x-csrf-token"] = self.csrf
        if endpoint.method != "GET":
            if self.csrf is not None:
                kwargs["data"] = {"csrf_token": self.csrf, "reason": "x", "next": "/"}
            else:
                kwargs["json"] = {"reason": "x", "baseline": True}
        return self.client.request(
            endpoint.method, url, headers=headers, follow_redirects=False, **kwargs
        )


@pytest.fixture
def callers(app: FastAPI, people: People) -> Iterator[list[Caller]]:
    with (
        TestClient(app, headers=bearer(people.alice.token)) as by_token,
        TestClient(app) as by_browser,
    ):
        web_login(by_browser, "alice", PASSWORD)
        csrf = csrf_from(by_browser.get("/account").text)
        yield [Caller("token", by_token, None), Caller("browser", by_browser, csrf)]


PUBLIC_PARAMS = {"name"}


def _values(endpoint: Endpoint, people: People, submission_id: int) -> list[dict[str, str]]:
    """Path values naming bob's things; one dict per value of a parameter with several."""
    base = {
        "submission_id": str(submission_id),
        "token_id": str(people.bob.token_id),
        "name": "default",  # a track: public, the same for everyone
    }
    if "action" not in endpoint.params:
        return [base]
    return [{**base, "action": action} for action in get_args(Action)]


def _message(response: Any, ident: int) -> tuple[int, str]:
    """What a refusal says, with the id asked for taken out."""
    if response.is_redirect:
        text = unquote(response.headers["location"])
    elif response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        text = f"{body.get('code')}: {body.get('detail')}"
    else:
        alert = ALERT.search(response.text)
        text = alert.group(1).strip() if alert else response.text
    return response.status_code, re.sub(rf"\b{ident}\b", "{id}", text)


def _refused(response: Any) -> bool:
    """Not found, not allowed, or (a browser on a workers' route) sent to the log-in page."""
    if response.is_redirect:
        return str(response.headers["location"]).startswith("/login")
    return response.status_code in (401, 403, 404)


def _bobs_state(settings: Settings, people: People) -> dict[str, Any]:
    bob = people.bob.user_id
    with db.session_scope(settings) as session:
        rows = session.scalars(select(Submission).where(Submission.user_id == bob)).all()
        submissions = {
            row.id: {c.name: getattr(row, c.name) for c in Submission.__table__.columns}
            for row in rows
        }
        tokens = session.scalars(select(ApiToken.digest).where(ApiToken.user_id == bob)).all()
        sessions = session.scalars(select(WebSession.digest).where(WebSession.user_id == bob)).all()
    archives = {
        row["file_path"]: storage.path_for(settings, row["file_path"]).read_bytes()
        for row in submissions.values()
    }
    return {
        "submissions": submissions,
        "tokens": sorted(tokens),
        "sessions": sorted(sessions),
        "archives": archives,
    }


def test_no_route_reads_or_changes_another_participants_things(
    app: FastAPI, secure_settings: Settings, people: People, callers: list[Caller]
) -> None:
    before = _bobs_state(secure_settings, people)
    # A track's name is public and names nobody's things: its routes are for everyone.
    with_ids = [e for e in endpoints(app) if set(e.params) - PUBLIC_PARAMS]
    assert any("submission_id" in e.params for e in with_ids)
    checked = 0
    for endpoint in with_ids:
        for caller in callers:
            for ident in [*people.bob.submissions.values(), *MISSING_IDS]:
                for values in _values(endpoint, people, ident):
                    response = caller.call(endpoint, endpoint.url(values))
                    where = f"{caller.kind} {endpoint} with id {ident}: {response.status_code}"
                    assert _refused(response), where
                    assert BOBS_SECRET not in response.text, f"{where} leaked bob's data"
                    if ident in MISSING_IDS:
                        continue
                    # Bob's id reads like an id nobody has.
                    unknown = {**values, "submission_id": str(MISSING_IDS[1])}
                    missing = caller.call(endpoint, endpoint.url(unknown))
                    assert _message(response, ident) == _message(missing, MISSING_IDS[1]), where
                    checked += 1
    assert checked >= len(with_ids) * len(callers) * len(people.bob.submissions)
    assert _bobs_state(secure_settings, people) == before
    # Bob's token still works: nothing above revoked it.
    me = callers[0].client.get("/api/v1/me", headers=bearer(people.bob.token))
    assert me.status_code == 200 and me.json()["user"]["name"] == "bob"


@postgres_only
def test_no_listing_or_page_shows_another_participants_things(
    app: FastAPI, people: People, callers: list[Caller]
) -> None:
    reads = [e for e in endpoints(app) if e.method == "GET" and not e.params]
    assert any(e.path == "/api/v1/submissions" for e in reads)
    for endpoint in reads:
        for caller in callers:
            for query in ("", "?everyone=true", "?offset=0&limit=100"):
                response = caller.call(endpoint, endpoint.path + query)
                where = f"{caller.kind} {endpoint}{query}: {response.status_code}"
                assert response.status_code < 500, where
                assert BOBS_SECRET not in response.text, f"{where} leaked bob's data"


def test_the_same_callers_reach_their_own_things(people: People, callers: list[Caller]) -> None:
    """The refusals above come from ownership, not from callers that cannot do anything."""
    from edc.status import SubmissionStatus

    own = people.alice.submissions
    by_token, by_browser = callers
    archive = by_token.client.get(f"/api/v1/submissions/{own[SubmissionStatus.COMPLETED]}/archive")
    assert archive.status_code == 200 and b"alice-own-data" in archive.content
    logs = by_browser.client.get(
        f"/api/v1/submissions/{own[SubmissionStatus.FAILED]}/logs",
        headers={"accept": "application/json"},
    )
    assert logs.status_code == 200 and "alice-own-data" in logs.json()["public_logs"]
    cancel = by_browser.call(
        Endpoint("POST", "/submissions/{submission_id}/cancel"),
        f"/submissions/{own[SubmissionStatus.QUEUED]}/cancel",
    )
    assert cancel.status_code == 303


@pytest.mark.parametrize(
    "guess", ["0", "-1", "1.5", "1e3", "0x10", str(MAX_ROW_ID + 1), str(2**63), "%20", "1;2"]
)
def test_guessed_ids_that_are_not_ids_are_refused_as_invalid(
    callers: list[Caller], guess: str
) -> None:
    for caller in callers:
        response = caller.client.get(
            f"/api/v1/submissions/{guess}", headers={"accept": "application/json"}
        )
        assert response.status_code == 422, (caller.kind, guess, response.text)
        assert response.json()["code"] == "invalid_request"

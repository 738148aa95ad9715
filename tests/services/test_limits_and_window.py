"""Submission limits and the competition window, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edc import db
from edc.config import Settings
from edc.errors import InvalidInput
from edc.models import utcnow
from edc.portal.app import create_app
from edc.services.rules import Limits
from edc.services.tracks import add_track, set_track_limits
from edc.status import FailureReason, SubmissionStatus
from tests.support.competition import add_submission, bearer, upload, web_login
from tests.support.live_server import People
from tests.support.platform import quick_task


def test_daily_limit_is_429_with_retry_after_and_when(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    alice_id, token = people.alice
    first = utcnow() - timedelta(hours=20)
    add_submission(rules, alice_id, created_at=first)
    add_submission(rules, alice_id, created_at=utcnow() - timedelta(hours=2))
    assert upload(app_client, token).status_code == 201  # the third of 3
    refused = upload(app_client, token)
    assert refused.status_code == 429
    body = refused.json()
    assert body["code"] == "rate_limited"
    # Room comes back when the submission of 20 hours ago leaves the 24-hour window.
    retry_after = int(refused.headers["Retry-After"])
    assert 4 * 3600 - 60 <= retry_after <= 4 * 3600 + 60
    when = (first + timedelta(days=1)).strftime("%Y-%m-%d %H:%M")
    assert "You have used all 3 submissions of the last 24 hours" in body["detail"]
    assert f"the next is allowed at {when}" in body["detail"]
    # Nothing was kept of the refused upload.
    assert len(list(rules.uploads_dir.iterdir())) == 1


def test_infrastructure_failures_and_cancelled_do_not_count(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    alice_id, token = people.alice
    for _ in range(3):
        add_submission(
            rules,
            alice_id,
            status=SubmissionStatus.FAILED,
            failure_reason=FailureReason.INFRASTRUCTURE,
        )
    add_submission(rules, alice_id, status=SubmissionStatus.CANCELLED)
    # Her own failure counts.
    add_submission(
        rules, alice_id, status=SubmissionStatus.FAILED, failure_reason=FailureReason.CRASHED
    )
    assert upload(app_client, token).status_code == 201
    assert upload(app_client, token).status_code == 201
    assert upload(app_client, token).status_code == 429


def test_at_most_k_waiting_at_once(app_client: TestClient, rules: Settings, people: People) -> None:
    alice_id, token = people.alice
    add_submission(
        rules, alice_id, status=SubmissionStatus.PROCESSING, created_at=utcnow() - timedelta(days=2)
    )
    add_submission(
        rules, alice_id, status=SubmissionStatus.QUEUED, created_at=utcnow() - timedelta(days=2)
    )
    refused = upload(app_client, token)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"].isdigit()
    assert "as soon as one of them finishes" in refused.json()["detail"]
    # Bob is not held back by Alice's queue, and admins are never limited.
    assert upload(app_client, people.bob[1]).status_code == 201
    for _ in range(4):
        assert upload(app_client, people.root[1]).status_code == 201


def test_me_reports_the_usage(app_client: TestClient, rules: Settings, people: People) -> None:
    alice_id, token = people.alice
    add_submission(rules, alice_id, status=SubmissionStatus.QUEUED)
    me = app_client.get("/api/v1/me", headers=bearer(token)).json()
    assert me["user"]["name"] == "alice" and me["user"]["is_admin"] is False
    assert me["usage"] == {
        "used_today": 1,
        "per_day": 3,
        "waiting": 1,
        "max_waiting": 2,
        "next_allowed_at": None,
    }
    assert me["competition"]["open"] is True


def test_each_track_counts_its_own_limits(
    app_client: TestClient, rules: Settings, people: People, tmp_path: Path
) -> None:
    """A track with its own limits counts only its own submissions against them; the default
    track keeps the platform's."""
    alice_id, token = people.alice
    with db.session_scope(rules) as session:
        add_track(
            session,
            rules,
            name="sprint",
            task_dir=quick_task(tmp_path / "sprint"),
            submissions_per_day=1,
        )
    # Two on the default track (of 3) leave the sprint's allowance whole.
    add_submission(rules, alice_id)
    add_submission(rules, alice_id)
    assert upload(app_client, token, track="sprint").status_code == 201
    refused = upload(app_client, token, track="sprint")
    assert refused.status_code == 429
    assert (
        "all 1 submissions in the track 'sprint' of the last 24 hours" in refused.json()["detail"]
    )
    # The sprint's upload did not use the default track's third.
    assert upload(app_client, token).status_code == 201
    assert upload(app_client, token).status_code == 429

    me = app_client.get("/api/v1/me?track=sprint", headers=bearer(token)).json()
    assert me["track"] == "sprint"
    assert (me["usage"]["used_today"], me["usage"]["per_day"]) == (1, 1)
    assert me["usage"]["next_allowed_at"] is not None
    default = app_client.get("/api/v1/me", headers=bearer(token)).json()
    assert (default["track"], default["usage"]["used_today"], default["usage"]["per_day"]) == (
        "default",
        3,
        3,
    )
    assert app_client.get("/api/v1/me?track=nope", headers=bearer(token)).status_code == 404
    # Her page tells each track's count.
    web_login(app_client, "alice")
    home = app_client.get("/").text
    assert "<strong>sprint</strong>:\n      You have used 1 of 1 submissions" in home
    assert "<strong>default</strong>:\n      You have used 3 of 3 submissions" in home

    # Set back to the platform's, the sprint allows 3 a day like the rest.
    with db.session_scope(rules) as session:
        track = set_track_limits(
            session, rules, "sprint", submissions_per_day=None, max_queued_per_user=None
        )
        assert track.limits(rules) == Limits(per_day=3, max_waiting=2)
        with pytest.raises(InvalidInput, match="from 1 to"):
            set_track_limits(
                session, rules, "sprint", submissions_per_day=0, max_queued_per_user=None
            )
    assert upload(app_client, token, track="sprint").status_code == 201


def test_a_tracks_page_and_starter_kit_state_its_own_limits(
    app_client: TestClient, rules: Settings, tmp_path: Path
) -> None:
    with db.session_scope(rules) as session:
        add_track(
            session,
            rules,
            name="sprint",
            task_dir=quick_task(tmp_path / "sprint"),
            submissions_per_day=7,
            max_queued_per_user=5,
        )
    own = "7 per participant per 24 hours (rolling), 5 waiting or running at once"
    platform = "3 per participant per 24 hours (rolling), 2 waiting or running at once"
    page = app_client.get("/task?track=sprint")
    assert page.status_code == 200 and own in page.text and platform not in page.text
    kit = app_client.get("/starter-kit.zip?track=sprint")
    assert kit.status_code == 200
    readme = zipfile.ZipFile(io.BytesIO(kit.content)).read("README.md").decode()
    assert f"- Submissions: {own};" in readme
    # A track that sets none states the platform's.
    assert platform in app_client.get("/task").text


def _windowed(rules: Settings, **window: object) -> TestClient:
    return TestClient(create_app(rules.model_copy(update=window)))


def test_uploads_before_the_start_are_refused_with_when(rules: Settings, people: People) -> None:
    start = utcnow() + timedelta(hours=3)
    with _windowed(rules, competition_start=start) as client:
        refused = upload(client, people.alice[1])
        assert refused.status_code == 403
        assert refused.json() == {
            "detail": "The competition has not started: uploads open at "
            f"{start:%Y-%m-%d %H:%M} UTC.",
            "code": "competition_closed",
        }
        assert upload(client, people.root[1]).status_code == 201  # an admin's baseline
        me = client.get("/api/v1/me", headers=bearer(people.alice[1])).json()
        assert me["competition"]["open"] is False
        assert "opens at" in me["competition"]["message"]
    assert len(list(rules.uploads_dir.iterdir())) == 1


def test_uploads_after_the_end_are_refused_but_admins_may_rerun(
    rules: Settings, people: People
) -> None:
    end = utcnow() - timedelta(minutes=5)
    done = add_submission(rules, people.alice[0])
    with _windowed(rules, competition_start=end - timedelta(days=7), competition_end=end) as client:
        refused = upload(client, people.alice[1])
        assert refused.status_code == 403
        assert refused.json()["detail"] == (
            f"The competition is over: uploads closed at {end:%Y-%m-%d %H:%M} UTC."
        )
        rerun = client.post(
            f"/api/v1/admin/submissions/{done}/rerun", headers=bearer(people.root[1])
        )
        assert rerun.status_code == 200
        assert rerun.json()["status"] == "queued" and rerun.json()["attempt"] == 2


def test_the_form_shows_the_refusal_sentence(rules: Settings, people: People) -> None:
    from tests.support.competition import csrf_from, web_login, zip_of

    with _windowed(rules, competition_end=utcnow() - timedelta(hours=1)) as client:
        web_login(client, "alice")
        token = csrf_from(client.get("/").text)
        page = client.post(
            "/submit", data={"csrf_token": token}, files={"file": ("s.zip", zip_of())}
        )
        assert page.status_code == 403
        assert "The competition is over: uploads closed at" in page.text
        assert "The competition closed at" in page.text  # the window sentence above the form

"""Teams: members share limits and one leaderboard row per track; teams are fixed once a final
phase opens. Over the API, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from edc import db
from edc.cli.main import app as edc_app
from edc.config import Settings, get_settings
from edc.models import FINAL_PHASE, Team, utcnow
from edc.portal.app import create_app
from edc.services import phases, teams
from edc.services.tracks import add_track, get_track
from tests.support.competition import (
    add_submission,
    bearer,
    csrf_from,
    make_user,
    metrics,
    upload,
    web_login,
)
from tests.support.live_server import LiveServer, People
from tests.support.platform import quick_task


def _create(client: TestClient, token: str, name: str) -> dict[str, object]:
    made = client.post("/api/v1/teams", json={"name": name}, headers=bearer(token))
    assert made.status_code == 201, made.text
    body: dict[str, object] = made.json()
    return body


def _join(client: TestClient, token: str, code: object) -> Any:
    return client.post("/api/v1/teams/join", json={"invite_code": code}, headers=bearer(token))


def test_a_team_of_two_shares_one_row_and_one_daily_limit(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    (alice, alice_token), (bob, bob_token) = people.alice, people.bob
    carol, _ = make_user(rules, "carol")
    team = _create(app_client, alice_token, "Fast-Decoders")
    assert team["name"] == "fast-decoders" and team["members"] == ["alice"]
    joined = _join(app_client, bob_token, team["invite_code"])
    assert joined.status_code == 200 and joined.json()["members"] == ["alice", "bob"]
    assert app_client.get("/api/v1/teams/mine", headers=bearer(bob_token)).json() == joined.json()

    # One archive run by both members pools into one entry; carol stays a row of her own.
    shared = "ab" * 32
    add_submission(rules, alice, sha256=shared, result_metrics=metrics(2.0, (1.8, 2.2)))
    add_submission(rules, bob, sha256=shared, result_metrics=metrics(2.2, (2.0, 2.4)))
    add_submission(rules, bob, result_metrics=metrics(3.0, (2.9, 3.1)))
    add_submission(rules, carol, result_metrics=metrics(2.5, (2.4, 2.6)))
    board = app_client.get("/api/v1/leaderboard").json()["entries"]
    assert [(e["participant"], e["runs"]) for e in board] == [("fast-decoders", 2), ("carol", 1)]
    assert board[0]["score"] == pytest.approx(2.1)

    # The daily allowance (3) is the team's: alice has used one, but with bob's two it is spent.
    refused = upload(app_client, alice_token)
    assert refused.status_code == 429
    assert upload(app_client, people.root[1]).status_code == 201  # admins are not limited
    me = app_client.get("/api/v1/me", headers=bearer(bob_token)).json()
    assert me["usage"]["used_today"] == 3

    # Bob leaves: his runs are his own row again; the team keeps alice's.
    assert app_client.post("/api/v1/teams/leave", headers=bearer(bob_token)).status_code == 204
    board = app_client.get("/api/v1/leaderboard").json()["entries"]
    assert [e["participant"] for e in board] == ["fast-decoders", "bob", "carol"]
    # Alice leaves too: the team is gone.
    assert app_client.post("/api/v1/teams/leave", headers=bearer(alice_token)).status_code == 204
    with db.session_scope(rules) as session:
        assert session.scalars(select(Team)).all() == []


def test_joining_is_refused_when_full_unknown_taken_or_already_in_one(
    rules: Settings, people: People
) -> None:
    (_, alice_token), (_, bob_token) = people.alice, people.bob
    with TestClient(create_app(rules.model_copy(update={"max_team_size": 1}))) as client:
        team = _create(client, alice_token, "solo")
        full = _join(client, bob_token, team["invite_code"])
        assert full.status_code == 409 and "at most 1 members" in full.json()["detail"]
        unknown = _join(client, bob_token, "not-a-code")
        assert unknown.status_code == 404 and "invite code" in unknown.json()["detail"]
        # A participant's name cannot be a team's: one name, one row.
        taken = client.post("/api/v1/teams", json={"name": "bob"}, headers=bearer(alice_token))
        assert taken.status_code == 409
        again = client.post("/api/v1/teams", json={"name": "two"}, headers=bearer(alice_token))
        assert again.status_code == 409 and "already in a team" in again.json()["detail"]
        bad = client.post("/api/v1/teams", json={"name": "no spaces"}, headers=bearer(bob_token))
        assert bad.status_code == 422
        assert client.get("/api/v1/teams/mine", headers=bearer(bob_token)).status_code == 404
        assert client.post("/api/v1/teams/leave", headers=bearer(bob_token)).status_code == 404
        assert client.post("/api/v1/teams", json={"name": "x1"}).status_code == 401


def test_teams_are_fixed_once_a_final_phase_opens(
    app_client: TestClient, rules: Settings, people: People, tmp_path: Path
) -> None:
    (alice, alice_token), (_, bob_token) = people.alice, people.bob
    team = _create(app_client, alice_token, "finalists")
    with db.session_scope(rules) as session:
        add_track(session, rules, name="sprint", task_dir=quick_task(tmp_path / "sprint"))
    add_submission(rules, alice, track="sprint", result_metrics=metrics(2.0, (1.9, 2.1)))
    # The organisers open the sprint's final phase (its final is queued, not run here).
    phases.open_final(rules, "sprint", top_k=1, rounds=1, requested_by="root")
    with db.session_scope(rules) as session:
        assert get_track(session, rules, "sprint").phase == FINAL_PHASE
    refused = _join(app_client, bob_token, team["invite_code"])
    assert refused.status_code == 403
    assert "final phase of the track 'sprint'" in refused.json()["detail"]
    assert app_client.post("/api/v1/teams/leave", headers=bearer(alice_token)).status_code == 403
    made = app_client.post("/api/v1/teams", json={"name": "late"}, headers=bearer(bob_token))
    assert made.status_code == 403


def test_team_commands(live_server: LiveServer, people: People, tmp_path: Path) -> None:
    runner = CliRunner()

    def edc(token: str, *args: str) -> str:
        env = {
            "EDC_SERVER": live_server.url,
            "EDC_TOKEN": token,
            "EDC_CLI_CONFIG_DIR": str(tmp_path),
        }
        get_settings.cache_clear()
        done = runner.invoke(edc_app, ["team", *args], env=env)
        get_settings.cache_clear()
        assert done.exit_code == 0, done.output
        return done.output

    created = edc(people.alice[1], "create", "cli-team")
    code = created.split("Invite code: ")[1].split()[0]
    assert "edc team join" in created
    assert "alice, bob (2 of at most 4)" in edc(people.bob[1], "join", code)
    assert "Team cli-team" in edc(people.bob[1], "show")
    assert "You have left your team." in edc(people.bob[1], "leave")


def test_the_account_page_creates_joins_and_leaves(app_client: TestClient, people: People) -> None:
    web_login(app_client, "alice")
    page = app_client.get("/account").text
    csrf = csrf_from(page)
    assert "Create a team" in page
    made = app_client.post(
        "/account/team/create",
        data={"csrf_token": csrf, "name": "web-team"},
        follow_redirects=False,
    )
    assert made.status_code == 303
    page = app_client.get("/account").text
    code = page.split('id="team-code" class="user-select-all">')[1].split("<")[0]
    assert 'id="team-name">web-team<' in page

    with TestClient(app_client.app) as bob:
        web_login(bob, "bob")
        bob_csrf = csrf_from(bob.get("/account").text)
        wrong = bob.post("/account/team/join", data={"csrf_token": bob_csrf, "invite_code": "x"})
        assert wrong.status_code == 404 and "invite code" in wrong.text
        joined = bob.post(
            "/account/team/join",
            data={"csrf_token": bob_csrf, "invite_code": code},
            follow_redirects=False,
        )
        assert joined.status_code == 303
        assert 'id="team-members">alice, bob<' in bob.get("/account").text
        # No CSRF token, no change.
        assert bob.post("/account/team/leave", data={}).status_code == 403
        left = bob.post(
            "/account/team/leave", data={"csrf_token": bob_csrf}, follow_redirects=False
        )
        assert left.status_code == 303 and "Create a team" in bob.get("/account").text


def test_a_team_without_shared_archives_shows_its_best_members_entry(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    (alice, alice_token), (bob, bob_token) = people.alice, people.bob
    team = _create(app_client, alice_token, "apart")
    assert _join(app_client, bob_token, team["invite_code"]).status_code == 200
    add_submission(rules, alice, result_metrics=metrics(2.0, (1.9, 2.1)))
    best = add_submission(rules, bob, result_metrics=metrics(1.5, (1.4, 1.6)))
    shared = "cd" * 32  # bob's two runs of one archive pool, as anyone's do
    add_submission(rules, bob, sha256=shared, result_metrics=metrics(1.8, (1.7, 1.9)))
    add_submission(rules, bob, sha256=shared, result_metrics=metrics(1.9, (1.8, 2.0)))
    board = app_client.get("/api/v1/leaderboard").json()["entries"]
    assert [(e["participant"], e["submission_id"], e["runs"]) for e in board] == [
        ("apart", best, 1)
    ]


@pytest.mark.parametrize("shared_archive", [False, True], ids=["apart", "shared"])
def test_among_a_teams_equal_entries_the_first_uploaded_stands_for_it(
    app_client: TestClient, rules: Settings, people: People, shared_archive: bool
) -> None:
    """A team is one entrant: among its equal entries, as among one participant's equal pools,
    the first uploaded stands for it, whether or not its members share an archive (two ways of
    computing its row) and whatever times the rows carry."""
    (alice, alice_token), (bob, bob_token) = people.alice, people.bob
    team = _create(app_client, alice_token, "even")
    assert _join(app_client, bob_token, team["invite_code"]).status_code == 200
    now = utcnow()
    # Uploaded first, stamped last (the stamp is taken before the insert, so concurrent uploads
    # can disagree).
    first = add_submission(rules, alice, created_at=now, result_metrics=metrics(2.0, (1.9, 2.1)))
    earlier = now - timedelta(hours=1)
    add_submission(rules, bob, created_at=earlier, result_metrics=metrics(2.0, (1.9, 2.1)))
    if shared_archive:  # one archive run by both: the team's pools are computed over both
        pooled_run = {"sha256": "ab" * 32, "result_metrics": metrics(2.0, (1.9, 2.1))}
        add_submission(rules, alice, created_at=earlier, **pooled_run)
        add_submission(rules, bob, created_at=earlier, **pooled_run)
    board = app_client.get("/api/v1/leaderboard").json()["entries"]
    assert [(e["participant"], e["submission_id"]) for e in board] == [("even", first)]


def test_the_record_history_names_a_team_members_record_by_the_team(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    (alice, alice_token), (bob, _) = people.alice, people.bob
    _create(app_client, alice_token, "record-setters")
    first = add_submission(rules, bob, result_metrics=metrics(3.0, (2.9, 3.1)))
    record = add_submission(rules, alice, result_metrics=metrics(2.0, (1.9, 2.1)))
    history = app_client.get("/api/v1/leaderboard/history").json()
    # As on the live board: alice's record is her team's; bob, in no team, keeps his name.
    assert [(r["submission_id"], r["participant"]) for r in history] == [
        (first, "bob"),
        (record, "record-setters"),
    ]
    board = app_client.get("/api/v1/leaderboard").json()["entries"]
    assert board[0]["participant"] == "record-setters"


def test_an_invite_code_never_starts_like_an_option() -> None:
    # `edc team join CODE` reads a leading "-" as an option; one random code in 64 had one.
    assert not any(teams._invite_code().startswith("-") for _ in range(2000))

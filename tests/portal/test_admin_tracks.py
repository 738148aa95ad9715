# The services' fixtures are imported by name; tests taking them as arguments redefine the names.
"""Adding a track from the admin page's form and from the admin API, as ``edc track add`` does:
the track is listed with its task, window and limits, and every refusal says why and adds
nothing."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from edc import db
from edc.config import Settings
from edc.services import accounts
from edc.services.tracks import TrackInfo, list_tracks
from edc.tasks.task import task_at
from tests.support.competition import PASSWORD, _hash_of, bearer, csrf_from, web_login

# The services' fixtures: the app on both databases with small limits, alice, bob and root.
from tests.support.live_server import People
from tests.support.platform import quick_task

PAGE = {"accept": "text/html"}


def _task(folder: Path) -> Path:
    """A task of its own hardware class (its task.toml is its own; model and prompts are links
    to the package's, never written)."""
    root = quick_task(folder)
    toml = root / "task.toml"
    toml.write_text(toml.read_text().replace('class = "cpu"', 'class = "h100"'))
    return root


def _tracks(settings: Settings) -> dict[str, TrackInfo]:
    with db.session_scope(settings) as session:
        return {t.name: t for t in list_tracks(session, settings)}


def _log_in_root(client: TestClient, settings: Settings) -> str:
    """Log the admin in through the form (its account has no password yet); its CSRF token."""
    with db.session_scope(settings) as session:
        root = accounts.user_by_name(session, "root")
        assert root is not None
        root.password_hash = _hash_of(PASSWORD)
    web_login(client, "root")
    return csrf_from(client.get("/admin").text)


def _form(csrf: str | None, **fields: str) -> dict[str, str]:
    form = {"name": "", "task_dir": "", "opens": "", "closes": "", "per_day": "", "max_waiting": ""}
    form.update(fields)
    if csrf is not None:
        form["csrf_token"] = csrf
    return form


def _row(page: str, name: str) -> str:
    match = re.search(rf'<tr id="track-{name}">(.*?)</tr>', page, re.DOTALL)
    assert match, f"no row for track {name} on the admin page"
    return match.group(1)


def test_an_admin_adds_a_track_with_the_page_form(
    app_client: TestClient, rules: Settings, people: People, tmp_path: Path
) -> None:
    task_dir = _task(tmp_path / "gpu-task")
    csrf = _log_in_root(app_client, rules)
    form = _form(
        csrf,
        name="gpu",
        task_dir=str(task_dir),
        opens="2030-01-31T12:00",  # a datetime-local field's value: UTC
        closes="2030-03-01T02:00+02:00",  # a zone given is honoured
        per_day="5",
        max_waiting="1",
    )
    added = app_client.post("/admin/tracks", data=form, headers=PAGE, follow_redirects=False)
    assert added.status_code == 303 and added.headers["location"] == "/admin#tracks"

    track = _tracks(rules)["gpu"]
    opens, closes = datetime(2030, 1, 31, 12, tzinfo=UTC), datetime(2030, 3, 1, tzinfo=UTC)
    assert track.task_dir == task_dir.resolve() and track.hardware_class == "h100"
    assert (track.opens_at, track.closes_at) == (opens, closes)
    assert (track.submissions_per_day, track.max_queued_per_user) == (5, 1)

    row = _row(app_client.get("/admin").text, "gpu")
    task = task_at(task_dir)
    for shown in (
        f"{task.name} {task.version}",
        "h100",
        "development",
        "2030-01-31 12:00 UTC",
        "2030-03-01 00:00 UTC",
        "5 per 24 h, 1 waiting",
        str(task_dir.resolve()),
    ):
        assert shown in row, shown

    listed = {t["name"]: t for t in app_client.get("/api/v1/tracks").json()}
    assert list(listed) == ["default", "gpu"]
    gpu = listed["gpu"]
    assert (gpu["hardware_class"], gpu["task"], gpu["is_default"]) == ("h100", task.name, False)
    assert datetime.fromisoformat(gpu["opens_at"]) == opens
    assert datetime.fromisoformat(gpu["closes_at"]) == closes


def test_empty_optional_fields_are_the_platforms(
    app_client: TestClient, rules: Settings, people: People, tmp_path: Path
) -> None:
    csrf = _log_in_root(app_client, rules)
    form = _form(csrf, name="plain", task_dir=str(_task(tmp_path / "t")))
    added = app_client.post("/admin/tracks", data=form, follow_redirects=False)
    assert added.status_code == 303

    track = _tracks(rules)["plain"]
    assert (track.opens_at, track.closes_at) == (None, None)
    assert (track.submissions_per_day, track.max_queued_per_user) == (None, None)
    limits = track.limits(rules)
    assert (limits.per_day, limits.max_waiting) == (3, 2)  # the `rules` fixture's
    row = _row(app_client.get("/admin").text, "plain")
    assert "always – never" in row and "3 per 24 h, 2 waiting" in row


def test_a_track_whose_task_broke_is_still_listed(
    app_client: TestClient, rules: Settings, people: People, tmp_path: Path
) -> None:
    task_dir = _task(tmp_path / "t")
    csrf = _log_in_root(app_client, rules)
    form = _form(csrf, name="gone", task_dir=str(task_dir))
    assert app_client.post("/admin/tracks", data=form, follow_redirects=False).status_code == 303
    (task_dir / "task.toml").unlink()  # its own copy: the package's folders are only linked
    page = app_client.get("/admin")
    assert page.status_code == 200
    assert "it has no task.toml" in _row(page.text, "gone")


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({"name": "Big Track"}, 400, "A track name is 1-64 lowercase letters"),
        ({"task_dir": "{empty}"}, 400, "is not a task directory: it has no task.toml"),
        ({"task_dir": "relative/task"}, 400, "must be an absolute path"),
        ({"task_dir": ""}, 400, "Give the track's task directory."),
        ({"name": "default"}, 409, "There is already a track 'default'."),
        ({"per_day": "0"}, 400, "A track's limit must be from 1 to 2147483647, not 0."),
        ({"max_waiting": "two"}, 400, "The number waiting must be a whole number."),
        ({"opens": "tomorrow"}, 400, "The opening time must be a date and time"),
        (
            {"opens": "2030-02-01T00:00", "closes": "2030-01-01T00:00"},
            400,
            "A track's window must close after it opens.",
        ),
    ],
)
def test_a_refused_form_says_why_and_adds_nothing(
    app_client: TestClient,
    rules: Settings,
    people: People,
    tmp_path: Path,
    fields: dict[str, str],
    status: int,
    message: str,
) -> None:
    (tmp_path / "empty").mkdir()
    good = {"name": "gpu", "task_dir": str(_task(tmp_path / "gpu-task"))}
    given = {k: v.replace("{empty}", str(tmp_path / "empty")) for k, v in fields.items()}
    csrf = _log_in_root(app_client, rules)
    refused = app_client.post("/admin/tracks", data=_form(csrf, **{**good, **given}), headers=PAGE)
    assert refused.status_code == status
    assert str(escape(message)) in refused.text  # on the error page, with the admin's own nav
    assert "<html" in refused.text.lower()
    assert list(_tracks(rules)) == ["default"]


def test_a_name_taken_by_an_added_track_is_refused(
    app_client: TestClient, rules: Settings, people: People, tmp_path: Path
) -> None:
    csrf = _log_in_root(app_client, rules)
    first = _form(csrf, name="gpu", task_dir=str(_task(tmp_path / "a")), per_day="7")
    assert app_client.post("/admin/tracks", data=first, follow_redirects=False).status_code == 303
    again = _form(csrf, name="gpu", task_dir=str(_task(tmp_path / "b")), per_day="9")
    refused = app_client.post("/admin/tracks", data=again, headers=PAGE)
    assert refused.status_code == 409
    assert str(escape("There is already a track 'gpu'.")) in refused.text
    tracks = _tracks(rules)
    assert list(tracks) == ["default", "gpu"]
    assert tracks["gpu"].task_dir == (tmp_path / "a").resolve()
    assert tracks["gpu"].submissions_per_day == 7


def test_a_participant_cannot_add_a_track(
    app_client: TestClient, rules: Settings, people: People, tmp_path: Path
) -> None:
    task_dir = str(_task(tmp_path / "t"))
    web_login(app_client, "alice")
    csrf = csrf_from(app_client.get("/account").text)
    page = app_client.post(
        "/admin/tracks",
        data=_form(csrf, name="mine", task_dir=task_dir),
        headers=PAGE,
        follow_redirects=False,
    )
    assert page.status_code == 403
    api = app_client.post(
        "/api/v1/admin/tracks",
        json={"name": "mine", "task_dir": task_dir},
        headers=bearer(people.alice[1]),
    )
    assert api.status_code == 403 and api.json()["code"] == "forbidden"
    assert list(_tracks(rules)) == ["default"]


@pytest.mark.parametrize("csrf", [None, "forged"])
def test_the_form_needs_the_csrf_token(
    app_client: TestClient, rules: Settings, people: People, tmp_path: Path, csrf: str | None
) -> None:
    _log_in_root(app_client, rules)
    form = _form(csrf, name="gpu", task_dir=str(_task(tmp_path / "t")))
    refused = app_client.post("/admin/tracks", data=form, follow_redirects=False)
    assert refused.status_code == 403
    assert list(_tracks(rules)) == ["default"]


def test_the_api_adds_a_track_and_refuses_a_taken_name(
    app_client: TestClient, rules: Settings, people: People, tmp_path: Path
) -> None:
    root = bearer(people.root[1])
    task_dir = _task(tmp_path / "gpu-task")
    body = {
        "name": "gpu",
        "task_dir": str(task_dir),
        "opens_at": "2030-01-31T12:00:00",  # no zone: UTC
        "closes_at": None,
        "submissions_per_day": 4,
    }
    created = app_client.post("/api/v1/admin/tracks", json=body, headers=root)
    assert created.status_code == 201, created.text
    out = created.json()
    assert (out["name"], out["hardware_class"], out["is_default"]) == ("gpu", "h100", False)
    assert out["phase"] == "development" and out["closes_at"] is None
    assert datetime.fromisoformat(out["opens_at"]) == datetime(2030, 1, 31, 12, tzinfo=UTC)
    track = _tracks(rules)["gpu"]
    assert (track.submissions_per_day, track.max_queued_per_user) == (4, None)

    taken = app_client.post("/api/v1/admin/tracks", json=body, headers=root)
    assert taken.status_code == 409
    assert taken.json() == {"detail": "There is already a track 'gpu'.", "code": "conflict"}
    empty = tmp_path / "empty"
    empty.mkdir()
    not_a_task = app_client.post(
        "/api/v1/admin/tracks", json={"name": "other", "task_dir": str(empty)}, headers=root
    )
    assert not_a_task.status_code == 400 and not_a_task.json()["code"] == "invalid_input"
    assert "is not a task directory" in not_a_task.json()["detail"]
    out_of_range = app_client.post(
        "/api/v1/admin/tracks",
        json={"name": "other", "task_dir": str(task_dir), "max_queued_per_user": 0},
        headers=root,
    )
    assert out_of_range.status_code == 422
    assert list(_tracks(rules)) == ["default", "gpu"]

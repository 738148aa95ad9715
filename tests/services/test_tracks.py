"""Tracks: several tasks on one platform, each submission judged by its track's task on a worker of
its track's hardware class, and ranked on its track's leaderboard only."""

from __future__ import annotations

import io
import shutil
import tomllib
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from edc import db
from edc.cli.main import app as edc_app
from edc.config import Settings, get_settings
from edc.errors import Conflict, InvalidInput, NotFound
from edc.models import DEFAULT_TRACK, Submission, utcnow
from edc.scheduler import fair_worker
from edc.services import finals
from edc.services.phases import open_final
from edc.services.tracks import add_track, get_track, list_tracks
from edc.status import SubmissionStatus
from edc.tasks.task import bundled_task_dir
from edc.worker.evaluation import submission_track
from tests.support.competition import add_submission, bearer, metrics
from tests.support.databases import postgres_only
from tests.support.live_server import LiveServer, People
from tests.support.platform import quick_task

REPO = Path(__file__).resolve().parents[2]
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


def _gpu_task(folder: Path) -> Path:
    """A second task: the quick one, decoding 8 tokens, for workers of class h100. Its prompts
    are its own copy (the quick task links the package's), so a test may add files there."""
    root = quick_task(folder, max_new_tokens=8)
    prompts = root / "prompts"
    prompts.unlink()
    shutil.copytree(bundled_task_dir() / "prompts", prompts)
    toml = root / "task.toml"
    toml.write_text(toml.read_text().replace('class = "cpu"', 'class = "h100"'))
    return root


def test_a_fresh_platform_has_one_default_track(settings: Settings) -> None:
    with db.session_scope(settings) as session:
        tracks = list_tracks(session, settings)
        assert [t.name for t in tracks] == [DEFAULT_TRACK]
        assert tracks[0].task_dir == (settings.task_dir or bundled_task_dir())
        assert get_track(session, settings, None).name == DEFAULT_TRACK


def test_a_track_is_a_task_that_loads_under_a_new_name(settings: Settings, tmp_path: Path) -> None:
    gpu = _gpu_task(tmp_path / "gpu")
    with db.session_scope(settings) as session:
        with pytest.raises(InvalidInput, match="lowercase"):
            add_track(session, settings, name="Big Track", task_dir=gpu)
        with pytest.raises(InvalidInput, match="not a task directory"):
            add_track(session, settings, name="empty", task_dir=tmp_path)
        with pytest.raises(Conflict, match="already a track 'default'"):
            add_track(session, settings, name=DEFAULT_TRACK, task_dir=gpu)
        track = add_track(session, settings, name="gpu", task_dir=gpu)
        assert track.hardware_class == "h100" and track.ranking().track == "gpu"
    with db.session_scope(settings) as session:
        # Two tracks: naming none means the default one; an unknown one is named with the rest.
        assert get_track(session, settings, None).name == DEFAULT_TRACK
        with pytest.raises(NotFound, match="no track 'nope'; the tracks are: default, gpu"):
            get_track(session, settings, "nope")


def _kvcache_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(REPO / "examples" / "kvcache" / "submission.py", "submission.py")
    return buffer.getvalue()


def _upload(server: LiveServer, token: str, track: str | None) -> httpx.Response:
    data = {"track": track} if track else {}
    return httpx.post(
        f"{server.url}/api/v1/submissions",
        headers=bearer(token),
        data=data,
        files={"file": ("kv.zip", _kvcache_zip(), "application/zip")},
        timeout=30,
    )


@pytest.fixture
def worker_settings(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    task = quick_task(tmp_path_factory.mktemp("default-task") / "task")
    return live_server.settings.model_copy(update={"task_dir": task, "max_attempts": 1})


@pytest.mark.usefixtures("worker_environment")
@postgres_only
def test_each_track_is_judged_by_its_task_on_its_class_and_ranked_apart(
    live_server: LiveServer, worker_settings: Settings, people: People, tmp_path: Path
) -> None:
    s = worker_settings
    with db.session_scope(s) as session:
        add_track(session, s, name="gpu", task_dir=_gpu_task(tmp_path / "gpu"))
    _, alice = people.alice
    on_default = _upload(live_server, alice, None)
    on_gpu = _upload(live_server, alice, "gpu")
    assert on_default.status_code == 201 and on_gpu.status_code == 201, on_gpu.text
    assert on_default.json()["track"] == DEFAULT_TRACK and on_gpu.json()["track"] == "gpu"
    unknown = _upload(live_server, alice, "nope")
    assert unknown.status_code == 404 and "the tracks are: default, gpu" in unknown.text

    default_id, gpu_id = on_default.json()["id"], on_gpu.json()["id"]
    with db.session_scope(s) as session:
        rows = {r.id: r for r in session.scalars(select(Submission))}
        assert (rows[gpu_id].track, rows[gpu_id].hardware_class) == ("gpu", "h100")
        assert (rows[default_id].track, rows[default_id].hardware_class) == ("default", "cpu")
    assert submission_track(s, gpu_id).task_dir == (tmp_path / "gpu").resolve()

    # A worker of class h100 takes the gpu track's submission only.
    assert fair_worker.make_worker(s, name="w-h100", hardware_class="h100").work(burst=True)
    with db.session_scope(s) as session:
        gpu_row = session.get(Submission, gpu_id)
        assert gpu_row is not None and gpu_row.status is SubmissionStatus.COMPLETED
        assert gpu_row.worker_id == "w-h100"
        # Judged by the gpu track's task: 8 tokens per request.
        assert gpu_row.result_metrics is not None
        requests = gpu_row.result_metrics["tokens_checked"] / 8
        assert requests == int(requests)
        default_row = session.get(Submission, default_id)
        assert default_row is not None and default_row.status is SubmissionStatus.QUEUED
    assert fair_worker.make_worker(s, name="w-cpu", hardware_class="cpu").work(burst=True)
    with db.session_scope(s) as session:
        default_row = session.get(Submission, default_id)
        assert default_row is not None and default_row.status is SubmissionStatus.COMPLETED
        assert default_row.result_metrics is not None
        assert default_row.result_metrics["tokens_checked"] % 16 == 0

    tracks = httpx.get(f"{live_server.url}/api/v1/tracks").json()
    assert [(t["name"], t["hardware_class"]) for t in tracks] == [
        ("default", "cpu"),
        ("gpu", "h100"),
    ]
    gpu_board = httpx.get(f"{live_server.url}/api/v1/tracks/gpu/leaderboard").json()
    default_board = httpx.get(f"{live_server.url}/api/v1/leaderboard").json()
    assert [e["submission_id"] for e in gpu_board["entries"]] == [gpu_id]
    assert [e["submission_id"] for e in default_board["entries"]] == [default_id]
    missing = httpx.get(f"{live_server.url}/api/v1/tracks/nope/leaderboard")
    assert missing.status_code == 404

    # The gpu track's final phase: its uploads close, its top entry is re-measured on its class,
    # and its final board is published; the default track goes on taking uploads.
    final = open_final(s, "gpu", top_k=1, rounds=1, requested_by="test", now=FAR_FUTURE)
    assert (final.track, final.hardware_class) == ("gpu", "h100")
    closed = _upload(live_server, alice, "gpu")
    assert closed.status_code == 403 and "final phase" in closed.text
    assert _upload(live_server, alice, None).status_code == 201
    assert fair_worker.make_worker(s, name="w-h100", hardware_class="h100").work(burst=True)
    with db.session_scope(s) as session:
        published = finals.latest_board(session, track="gpu")
        assert finals.latest_board(session) is None  # the default track has none
    assert published is not None
    assert [standing.submission_id for standing in published.ranked] == [gpu_id]
    phases = {t["name"]: t["phase"] for t in httpx.get(f"{live_server.url}/api/v1/tracks").json()}
    assert phases == {"default": "development", "gpu": "final"}


def test_boards_never_mix_tracks(settings: Settings, people: People, tmp_path: Path) -> None:
    alice, _ = people.alice
    bob, _ = people.bob
    with db.session_scope(settings) as session:
        add_track(session, settings, name="gpu", task_dir=_gpu_task(tmp_path / "gpu"))
    # Alice's best run overall is on the gpu track; on the default board her worse one counts.
    best = add_submission(settings, alice, result_metrics=metrics(1.0, (0.9, 1.1)), track="gpu")
    worse = add_submission(settings, alice, result_metrics=metrics(3.0, (2.9, 3.1)))
    bobs = add_submission(settings, bob, result_metrics=metrics(2.0, (1.9, 2.1)))
    base = add_submission(
        settings, None, result_metrics=metrics(5.0, (4.9, 5.1)), is_baseline=True, track="gpu"
    )
    from edc.services import board_cache

    with db.session_scope(settings) as session:
        default = board_cache.current(session, get_track(session, settings, None).ranking())
        gpu = board_cache.current(session, get_track(session, settings, "gpu").ranking())
    assert [e.submission_id for e in default.entries] == [bobs, worse]
    assert default.baselines == []
    assert [e.submission_id for e in gpu.entries] == [best]
    assert [e.submission_id for e in gpu.baselines] == [base]


def test_track_commands_add_and_list(settings: Settings, tmp_path: Path) -> None:
    env = {
        "EDC_DATABASE_URL": settings.resolved_database_url,
        "EDC_DATA_DIR": str(tmp_path),
        "COLUMNS": "200",  # the table's rows on one line each
    }
    runner = CliRunner()
    get_settings.cache_clear()
    gpu = str(_gpu_task(tmp_path / "g"))
    added = runner.invoke(edc_app, ["track", "add", "gpu", gpu, "--per-day", "4"], env=env)
    assert added.exit_code == 0, added.output
    assert "hardware class h100" in added.output
    assert "4 submissions per participant per 24 hours, 2 waiting at once" in added.output
    limited = runner.invoke(edc_app, ["track", "limits", "gpu", "--max-waiting", "1"], env=env)
    assert limited.exit_code == 0, limited.output
    # What is not given is the platform's again.
    assert "10 submissions per participant per 24 hours, 1 waiting at once" in limited.output
    nope = runner.invoke(edc_app, ["track", "limits", "nope", "--per-day", "1"], env=env)
    assert nope.exit_code == 2 and "no track 'nope'" in nope.output
    again = runner.invoke(edc_app, ["track", "add", "gpu", str(tmp_path / "g")], env=env)
    assert again.exit_code == 2 and "already a track 'gpu'" in again.output
    listed = runner.invoke(edc_app, ["track", "list"], env=env)
    get_settings.cache_clear()
    assert listed.exit_code == 0, listed.output
    assert "default (default)" in listed.output and "h100" in listed.output
    assert "10/day, 1 waiting" in listed.output


def test_pages_show_one_track_at_a_time(
    app_client: TestClient, rules: Settings, people: People, tmp_path: Path
) -> None:
    alice, _ = people.alice
    with db.session_scope(rules) as session:
        add_track(session, rules, name="gpu", task_dir=_gpu_task(tmp_path / "gpu"))
    on_gpu = add_submission(rules, alice, result_metrics=metrics(1.0, (0.9, 1.1)), track="gpu")
    board = app_client.get("/leaderboard?track=gpu")
    assert board.status_code == 200
    assert 'data-track="gpu"' in board.text and 'id="board-track">gpu<' in board.text
    assert f"entry-{on_gpu}" in board.text
    assert f"entry-{on_gpu}" not in app_client.get("/leaderboard").text
    task = app_client.get("/task?track=gpu")
    assert task.status_code == 200 and "h100" in task.text and 'id="track-tabs"' in task.text
    assert "h100" not in app_client.get("/task").text
    missing = app_client.get("/leaderboard?track=nope")
    assert missing.status_code == 404 and "the tracks are: default, gpu" in missing.text


def test_a_tracks_starter_kit_holds_the_public_side_only(
    app_client: TestClient, rules: Settings, tmp_path: Path
) -> None:
    gpu = _gpu_task(tmp_path / "gpu")
    hidden = gpu / "prompts" / "hidden.jsonl"
    hidden.write_text('{"id": "secret-1", "tokens": [7, 7, 7, 123, 45, 99, 250, 3]}\n')
    (gpu / "baseline").mkdir()
    (gpu / "baseline" / "submission.py").write_bytes(
        (REPO / "examples" / "kvcache" / "submission.py").read_bytes()
    )
    with db.session_scope(rules) as session:
        add_track(session, rules, name="gpu", task_dir=gpu)
    response = app_client.get("/starter-kit.zip?track=gpu")
    assert response.status_code == 200
    assert 'filename="starter-kit-gpu.zip"' in response.headers["content-disposition"]
    kit = zipfile.ZipFile(io.BytesIO(response.content))
    names = kit.namelist()
    assert {"README.md", "prompts/public.jsonl", "model/config.json"} <= set(names)
    assert "model/model.safetensors" in names  # 11 MB: small enough to ship
    assert "examples/baseline/submission.py" in names
    assert (gpu / "prompts" / "public.jsonl").read_bytes() == kit.read("prompts/public.jsonl")
    readme = kit.read("README.md").decode()
    assert "track gpu" in readme and "h100" in readme and "--track gpu" in readme
    # Nothing hidden: no hidden prompt, no task.toml (its seed), in any file of the kit.
    assert not any("hidden" in n or n.endswith("task.toml") for n in names)
    everything = b"".join(kit.read(n) for n in names)
    assert b"secret-1" not in everything
    seed = tomllib.loads((gpu / "task.toml").read_text())["sampling"]["seed"]
    assert str(seed).encode() not in b"".join(
        kit.read(n) for n in names if n != "model/model.safetensors"
    )
    assert app_client.get("/starter-kit.zip?track=nope").status_code == 404


def test_the_final_phase_opens_only_after_the_window(rules: Settings, tmp_path: Path) -> None:
    end = utcnow() + timedelta(hours=1)
    s = rules.model_copy(update={"competition_end": end})
    with db.session_scope(s) as session:
        add_track(session, s, name="gpu", task_dir=_gpu_task(tmp_path / "gpu"))
    with pytest.raises(Conflict, match="opens at or after the track's end"):
        open_final(s, "gpu", top_k=1, rounds=1, requested_by="test", now=utcnow())
    # After the end, with nothing ranked on the track: the phase opens (uploads close) and the
    # re-measurement is refused for want of entries; opening it again says the same.
    for _ in range(2):
        with pytest.raises(Conflict, match="no ranked entry"):
            open_final(s, "gpu", top_k=1, rounds=1, requested_by="test", now=end)
    with db.session_scope(s) as session:
        assert get_track(session, s, "gpu").phase == "final"
        assert get_track(session, s, None).phase == "development"


def test_a_track_has_its_own_upload_window(
    app_client: TestClient, rules: Settings, people: People, tmp_path: Path
) -> None:
    _, alice = people.alice
    closed_at = utcnow() - timedelta(hours=1)
    with db.session_scope(rules) as session:
        add_track(
            session,
            rules,
            name="gpu",
            task_dir=_gpu_task(tmp_path / "gpu"),
            opens_at=closed_at - timedelta(days=7),
            closes_at=closed_at,
        )
        with pytest.raises(InvalidInput, match="close after it opens"):
            add_track(
                session,
                rules,
                name="late",
                task_dir=tmp_path / "gpu",
                opens_at=closed_at,
                closes_at=closed_at,
            )

    def upload(track: str) -> Any:
        return app_client.post(
            "/api/v1/submissions",
            headers=bearer(alice),
            data={"track": track},
            files={"file": ("kv.zip", _kvcache_zip(), "application/zip")},
        )

    refused = upload("gpu")
    assert refused.status_code == 403 and "closed at" in refused.text
    assert upload("default").status_code == 201  # the platform's window: open
    page = app_client.get("/task?track=gpu").text
    assert f"The competition closed at {closed_at:%Y-%m-%d %H:%M} UTC" in page
    listed = {t["name"]: t for t in app_client.get("/api/v1/tracks").json()}
    assert listed["gpu"]["closes_at"].startswith(closed_at.strftime("%Y-%m-%dT%H:%M"))
    assert listed["default"]["closes_at"] is None
    # Its final phase may open now, though the platform's window has no end.
    with pytest.raises(Conflict, match="no ranked entry"):
        open_final(rules, "gpu", top_k=1, rounds=1, requested_by="test")
    with db.session_scope(rules) as session:
        assert get_track(session, rules, "gpu").phase == "final"

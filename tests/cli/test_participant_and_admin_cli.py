"""The participant and admin CLI against a real portal over HTTP."""

from __future__ import annotations

import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from sqlalchemy import select, update
from typer.testing import CliRunner

from edc import db
from edc.cli.client import PortalClient, load_credentials
from edc.config import Settings, get_settings
from edc.models import Submission, User, utcnow
from edc.portal.events import POLL_S
from edc.status import SubmissionStatus
from tests.support.competition import PASSWORD, add_submission, metrics
from tests.support.databases import postgres_only
from tests.support.live_server import LiveServer, People


@pytest.fixture
def env(live_server: LiveServer, tmp_path: Path) -> Iterator[dict[str, str]]:
    settings = live_server.settings
    values = {
        "EDC_CLI_CONFIG_DIR": str(tmp_path / "cli"),
        "EDC_DATA_DIR": str(settings.data_dir),
        "EDC_DATABASE_URL": settings.resolved_database_url,
    }
    get_settings.cache_clear()
    yield values
    get_settings.cache_clear()


def run(
    edc: typer.Typer, env: dict[str, str], *args: str, stdin: str | None = None
) -> tuple[int, str]:
    get_settings.cache_clear()
    result = CliRunner().invoke(edc, list(args), env=env, input=stdin)
    return result.exit_code, result.output


@postgres_only
def test_login_submit_follow_status_logs_leaderboard(
    edc: typer.Typer, env: dict[str, str], live_server: LiveServer, people: People, tmp_path: Path
) -> None:
    code, out = run(edc, env, "login", "--server", live_server.url, stdin=f"alice\n{PASSWORD}\n")
    assert code == 0, out
    assert "as alice" in out
    stored = Path(env["EDC_CLI_CONFIG_DIR"]) / "credentials.json"
    assert stored.stat().st_mode & 0o777 == 0o600

    folder = tmp_path / "mine"
    (folder / "__pycache__").mkdir(parents=True)
    (folder / "submission.py").write_text("class Decoder:\n    pass\n")
    (folder / "__pycache__" / "x.pyc").write_bytes(b"junk")
    settings = live_server.settings

    def finish_like_a_worker() -> None:
        # The worker's part, done by hand: claim the row, then store a result.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with db.session_scope(settings) as session:
                row = session.scalar(select(Submission.id).order_by(Submission.id.desc()))
            if row is not None:
                break
            time.sleep(0.1)
        time.sleep(1.0)
        _set(settings, row, status=SubmissionStatus.PROCESSING, started_at=utcnow(), worker_id="w9")
        # Every stream of a submission reads one shared watch: once this stream has been sent
        # "processing", the CLI's stream is sent it on its next wake, well within three polls.
        watch_until_processing(row)
        time.sleep(3 * POLL_S)
        _set(
            settings,
            row,
            status=SubmissionStatus.COMPLETED,
            finished_at=utcnow(),
            result_metrics=metrics(3.5, (3.4, 3.6)),
            public_logs="loaded the model\n",
        )

    def watch_until_processing(row: int) -> None:
        token = load_credentials(Path(env["EDC_CLI_CONFIG_DIR"]))
        assert token is not None
        with PortalClient(live_server.url, token.token) as client:
            for event, data in client.events(row):
                if event == "submission" and data["status"] == "processing":
                    return
        raise AssertionError("the stream ended before the submission was processing")

    worker = threading.Thread(target=finish_like_a_worker)
    worker.start()
    code, out = run(edc, env, "submit", str(folder))
    worker.join()
    assert code == 0, out
    assert "accepted" in out
    assert "position 1 in the queue" in out
    assert "processing on w9" in out
    assert "completed" in out and "3.5" in out and "3.4 – 3.6" in out
    assert "throughput (tok/s)" in out  # the pages' unit
    with db.session_scope(settings) as session:
        row = session.scalars(select(Submission)).one()
        archive = settings.data_dir / row.file_path
    assert zipfile.ZipFile(archive).namelist() == ["submission.py"]  # the cache was left out

    code, out = run(edc, env, "status", str(row.id))
    assert code == 0 and "completed" in out
    code, out = run(edc, env, "logs", str(row.id))
    assert code == 0 and "loaded the model" in out and "full logs" not in out
    code, out = run(edc, env, "leaderboard")
    assert code == 0 and "alice" in out and "3.5" in out

    env_bob = {**env, "EDC_SERVER": live_server.url, "EDC_TOKEN": people.bob[1]}
    code, out = run(edc, env_bob, "status", str(row.id))  # on the leaderboard: public fields only
    assert code == 0 and "belongs to another participant" in out and "loaded the model" not in out
    code, out = run(edc, env_bob, "logs", str(row.id))
    assert code == 1 and "are for alice and the organisers only" in out


def test_submit_that_fails_exits_non_zero_and_limits_are_explained(
    edc: typer.Typer, env: dict[str, str], live_server: LiveServer, people: People, tmp_path: Path
) -> None:
    settings = live_server.settings
    env = {**env, "EDC_SERVER": live_server.url, "EDC_TOKEN": people.alice[1]}
    add_submission(settings, people.alice[0], status=SubmissionStatus.QUEUED)
    add_submission(settings, people.alice[0], status=SubmissionStatus.QUEUED)
    archive = tmp_path / "s.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("submission.py", "pass\n")
    code, out = run(edc, env, "submit", str(archive))
    assert code == 1
    assert "as soon as one of them finishes" in out and "Retry after" in out

    failed = add_submission(settings, people.bob[0], status=SubmissionStatus.FAILED)
    env_bob = {**env, "EDC_TOKEN": people.bob[1]}
    code, out = run(edc, env_bob, "status", str(failed))
    assert code == 0 and "failed" in out


def test_user_create_and_admin_commands(
    edc: typer.Typer, env: dict[str, str], live_server: LiveServer, people: People
) -> None:
    code, out = run(edc, env, "user", "create", "Organiser", "--admin")
    assert code == 0, out
    token = out.strip().splitlines()[-1]
    assert token.startswith("edc_")
    with db.session_scope(live_server.settings) as session:
        user = session.scalar(select(User).where(User.name == "organiser"))
        assert user is not None and user.is_admin
    assert run(edc, env, "user", "create", "organiser")[0] == 1  # taken

    admin_env = {**env, "EDC_SERVER": live_server.url, "EDC_TOKEN": token}
    done = add_submission(live_server.settings, people.alice[0], result_metrics=metrics(2.0))
    code, out = run(edc, admin_env, "admin", "rerun", str(done))
    assert code == 0 and "queued" in out
    code, out = run(edc, admin_env, "admin", "queue")
    assert code == 0 and "1 waiting" in out and "alice" in out
    code, out = run(edc, admin_env, "admin", "workers")
    assert code == 0 and "0 worker(s)" in out
    code, out = run(edc, admin_env, "admin", "cancel", str(done))
    assert code == 0 and "cancelled" in out
    code, out = run(edc, admin_env, "admin", "export", "submissions")
    assert code == 0 and out.startswith("id,participant,status")

    participant_env = {**admin_env, "EDC_TOKEN": people.alice[1]}
    code, out = run(edc, participant_env, "admin", "queue")
    assert code == 1 and "(admins) only" in out


def _set(settings: Settings, submission_id: int | None, **values: object) -> None:
    with db.session_scope(settings) as session:
        session.execute(update(Submission).where(Submission.id == submission_id).values(**values))

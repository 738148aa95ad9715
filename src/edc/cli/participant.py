"""`edc login`, `edc submit`, `edc status`, `edc logs`, `edc leaderboard`: the participant's CLI.

The portal and token come from ``edc login`` (stored in the user's config folder), overridden by
``EDC_SERVER`` / ``EDC_TOKEN``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from edc.cli.client import (
    Credentials,
    PortalClient,
    PortalError,
    UploadLimits,
    archive_for,
    check_archive,
    load_credentials,
    save_credentials,
)
from edc.cli.configured import settings_or_exit
from edc.config import Settings
from edc.errors import InvalidUpload

console = Console()
err_console = Console(stderr=True)

FINAL = ("completed", "failed", "cancelled")
STATUS_STYLE = {
    "queued": "white",
    "processing": "blue",
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
}


def config_dir(settings: Settings) -> Path:
    return settings.cli_config_dir or Path(typer.get_app_dir("edc"))


def connect(settings: Settings | None = None) -> PortalClient:
    """A client for the configured portal with the configured token; exits when there is none."""
    settings = settings or settings_or_exit()
    stored = load_credentials(config_dir(settings))
    server = settings.server or (stored.server if stored else None)
    token = settings.token or (stored.token if stored else None)
    if not server or not token:
        err_console.print(
            "[red]Not logged in.[/red] Run `edc login --server URL` (or set EDC_SERVER and "
            "EDC_TOKEN)."
        )
        raise typer.Exit(2)
    return PortalClient(server, token)


def fail(exc: PortalError) -> typer.Exit:
    err_console.print(f"[red]{escape(exc.message)}[/red]")
    if exc.retry_after_s:
        err_console.print(f"Retry after {exc.retry_after_s} s.")
    return typer.Exit(1)


# Refusals that depend on the limits the archive was checked against here.
LIMIT_CODES = frozenset({"too_large", "too_large_unpacked", "too_many_entries", "zip_bomb"})


def intake_limits(
    client: PortalClient, settings: Settings
) -> tuple[UploadLimits, PortalError | None]:
    """The limits to check an archive against before uploading it: the portal's own, else this
    machine's settings' (a portal before ``/upload-limits``). A portal that cannot be reached
    gives this machine's too, with the error to raise should the archive pass them: a refusal
    needs no portal, and the upload is not attempted."""
    try:
        published = client.upload_limits()
    except PortalError as exc:  # not reached: upload_limits raises nothing else
        return UploadLimits.from_settings(settings), exc
    return published or UploadLimits.from_settings(settings), None


def refuse_locally(exc: InvalidUpload, limits: UploadLimits, settings: Settings) -> typer.Exit:
    """The portal's sentence for an archive it would refuse, found before uploading it."""
    err_console.print(f"[red]{escape(exc.message)}[/red]")
    if exc.code not in LIMIT_CODES:
        return typer.Exit(1)
    if limits.published:
        archive = limits.archive
        note = (
            "Checked here, before uploading, against the portal's limits: a zip of at most "
            f"{_mb(limits.max_upload_bytes)}, unpacking to at most "
            f"{_mb(archive.max_unpacked_bytes)} in at most {archive.max_entries} entries, "
            f"compressed at most {archive.max_compression_ratio:g} to 1."
        )
    else:
        note = (
            "Checked on this machine, before uploading, against "
            f"EDC_MAX_UPLOAD_MB={settings.max_upload_mb}, "
            f"EDC_MAX_UNPACKED_MB={settings.max_unpacked_mb}, "
            f"EDC_MAX_ARCHIVE_ENTRIES={settings.max_archive_entries} and "
            f"EDC_MAX_COMPRESSION_RATIO={settings.max_compression_ratio:g} (the platform's "
            "defaults unless set here; the portal gave none of its own); if your portal allows "
            "more, set them to its values."
        )
    err_console.print(note, highlight=False)
    return typer.Exit(1)


def _mb(size_bytes: int) -> str:
    return f"{size_bytes / (1024 * 1024):g} MB"


def public_entry(client: PortalClient, submission_id: int) -> dict[str, Any] | None:
    """The public leaderboard's entry showing ``submission_id``, if it shows it."""
    try:
        board = client.leaderboard()
    except PortalError:
        return None
    for entry in (*board["entries"], *board["baselines"]):
        if entry["submission_id"] == submission_id:
            found: dict[str, Any] = entry
            return found
    return None


def refuse_read(
    client: PortalClient, submission_id: int, exc: PortalError, *, public_answers: bool
) -> typer.Exit:
    """The portal's refusal; but for another participant's submission the leaderboard shows, no
    "there is no submission" (it plainly exists): whose it is and what anyone may see of it (the
    leaderboard's figures, nothing more). ``public_answers``: that view answers the command."""
    entry = public_entry(client, submission_id) if exc.status == 404 else None
    if entry is None:
        return fail(exc)
    owner = escape(entry["participant"])
    place = "a baseline" if entry.get("baseline") else f"the entry ranked {entry['rank']}"
    console.print(
        f"Submission {submission_id} belongs to another participant: it is {owner}'s, "
        f"{place} on the public leaderboard. What anyone may see of it:"
    )
    console.print(public_table(entry))
    console.print(
        f"Its status, logs and full figures are for {owner} and the organisers only; "
        "`edc leaderboard` shows every public entry."
    )
    return typer.Exit(0 if public_answers else 1)


def status_line(submission: dict[str, Any]) -> str:
    status = str(submission["status"])
    text = f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"
    if submission.get("queue_position"):
        text += f", position {submission['queue_position']} in the queue"
    elif status == "processing" and submission.get("worker_id"):
        text += f" on {submission['worker_id']}"
    if submission.get("failure_reason"):
        text += f": {submission['failure_reason']}"
    if submission.get("failure_message"):
        text += f" — {submission['failure_message']}"
    return text


def result_table(submission: dict[str, Any]) -> Table:
    table = Table(title=f"Submission {submission['id']}", show_header=False)
    table.add_column("what", style="dim")
    table.add_column("value")
    table.add_row("status", status_line(submission))
    metrics = submission.get("result_metrics") or {}
    for label, path in (
        ("correct", ("correct",)),
        ("score", ("score",)),
        ("score 95% interval", ("score_ci",)),
        ("TPOT p50 (ms)", ("latency", "tpot_ms", "p50")),
        ("TTFT p50 (ms)", ("latency", "ttft_ms", "p50")),
        ("ITL p99 (ms)", ("latency", "itl_ms", "p99")),
        ("E2E p50 (ms)", ("latency", "e2e_ms", "p50")),
        ("throughput (tok/s)", ("throughput", "output_tokens_per_s")),
        ("load (s)", ("load_s",)),
        ("wall (s)", ("wall_s",)),
        ("exit code", ("exit_code",)),
    ):
        value: Any = metrics
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            table.add_row(label, _shown(value))
    return table


def public_table(entry: dict[str, Any]) -> Table:
    """One leaderboard entry, as the public leaderboard shows it."""
    table = Table(title=f"Submission {entry['submission_id']} (public)", show_header=False)
    table.add_column("what", style="dim")
    table.add_column("value")
    table.add_row("participant", entry["participant"])
    table.add_row("rank", "baseline" if entry.get("baseline") else str(entry["rank"]))
    for label, key in (
        ("score", "score"),
        ("score 95% interval", "score_ci"),
        ("TPOT p50 (ms)", "tpot_p50_ms"),
        ("TTFT p50 (ms)", "ttft_p50_ms"),
        ("throughput (tok/s)", "output_tokens_per_s"),
        ("runs", "runs"),
    ):
        if entry.get(key) is not None:
            table.add_row(label, _shown(entry[key]))
    # ISO 8601 in UTC, shown to the minute.
    table.add_row("submitted", f"{str(entry['submitted_at'])[:16].replace('T', ' ')} UTC")
    return table


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return " – ".join(_shown(v) for v in value)
    return str(value)


def follow(client: PortalClient, submission_id: int) -> dict[str, Any]:
    """Print each change of the submission until it is final; returns the final state."""
    last_line = None
    latest: dict[str, Any] = client.submission(submission_id)
    if latest["status"] in FINAL:
        return latest
    for event, data in client.events(submission_id):
        if event != "submission":
            continue
        latest = data
        line = status_line(data)
        if line != last_line:
            console.print(f"#{submission_id}: {line}")
            last_line = line
    return client.submission(submission_id)


def register(app: typer.Typer) -> None:
    """Add the participant's commands to ``app``."""

    @app.command()
    def login(
        server: Annotated[str, typer.Option(help="The portal's address, e.g. https://edc.example")],
        # Asked for when missing, so not required: default None keeps "[required]" off the help.
        name: Annotated[
            str | None,
            typer.Option(prompt="User name", show_default=False, help="Asked for when not given."),
        ] = None,
        password: Annotated[
            str | None,
            typer.Option(
                prompt=True, hide_input=True, show_default=False, help="Asked for when not given."
            ),
        ] = None,
        label: Annotated[str, typer.Option(help="What the token is for.")] = "cli",
    ) -> None:
        """Log in and store an API token for the other commands."""
        settings = settings_or_exit()
        assert name is not None and password is not None  # prompted for when missing
        with PortalClient(server) as client:
            try:
                issued = client.issue_token(name=name, password=password, label=label)
            except PortalError as exc:
                raise fail(exc) from exc
        path = save_credentials(config_dir(settings), Credentials(server, issued["token"]))
        console.print(f"Logged in to {server} as [bold]{issued['user']['name']}[/bold].")
        console.print(f"Token stored in {path}.")

    @app.command()
    def submit(
        path: Annotated[Path, typer.Argument(help="A zip, or a directory to zip.")],
        wait: Annotated[
            bool, typer.Option("--follow/--no-follow", help="Follow it to its result.")
        ] = True,
        track: Annotated[
            str | None,
            typer.Option(help="The track to compete in (default: the only or the default one)."),
        ] = None,
    ) -> None:
        """Upload a submission, then follow it live; exits non-zero unless it completes.

        The archive is first checked here as the portal will check it (size, zip safety, entry
        point), against the limits the portal publishes, so a refused one is not uploaded.
        """
        settings = settings_or_exit()
        with connect(settings) as client:
            try:
                limits, unreachable = intake_limits(client, settings)
                with archive_for(path) as archive:
                    try:
                        check_archive(archive, limits)
                    except InvalidUpload as exc:
                        raise refuse_locally(exc, limits, settings) from exc
                    if unreachable is not None:
                        raise unreachable
                    size = archive.stat().st_size
                    with Progress(
                        "[progress.description]{task.description}",
                        BarColumn(),
                        DownloadColumn(),
                        TransferSpeedColumn(),
                        console=err_console,
                    ) as progress:
                        task = progress.add_task(f"Uploading {archive.name}", total=size)
                        created = client.submit(
                            archive,
                            track=track,
                            on_progress=lambda sent, total: progress.update(
                                task, completed=min(sent, size), total=max(size, 1)
                            ),
                        )
                console.print(
                    f"Submission [bold]{created['id']}[/bold] accepted"
                    f" (track {escape(str(created.get('track')))})."
                    if track
                    else f"Submission [bold]{created['id']}[/bold] accepted."
                )
                if not wait:
                    return
                final = follow(client, int(created["id"]))
            except PortalError as exc:
                raise fail(exc) from exc
        console.print(result_table(final))
        if final["status"] != "completed":
            raise typer.Exit(1)

    @app.command()
    def status(submission_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
        """Show a submission's status and result."""
        with connect() as client:
            try:
                console.print(result_table(client.submission(submission_id)))
            except PortalError as exc:
                raise refuse_read(client, submission_id, exc, public_answers=True) from exc

    @app.command()
    def logs(submission_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
        """Print the logs you may read (admins: the full logs too)."""
        with connect() as client:
            try:
                body = client.logs(submission_id)
            except PortalError as exc:
                raise refuse_read(client, submission_id, exc, public_answers=False) from exc
        console.rule("logs of the run on public prompts")
        console.print(body.get("public_logs") or "(none)", markup=False, highlight=False)
        if body.get("logs") is not None:
            console.rule("full logs (admin)")
            console.print(body["logs"] or "(none)", markup=False, highlight=False)

    @app.command()
    def leaderboard(
        track: Annotated[
            str | None, typer.Option(help="A track's leaderboard (default: the default track's).")
        ] = None,
    ) -> None:
        """Print the leaderboard."""
        settings = settings_or_exit()
        stored = load_credentials(config_dir(settings))
        server = settings.server or (stored.server if stored else None)
        if not server:
            err_console.print("[red]No portal configured.[/red] Run `edc login --server URL`.")
            raise typer.Exit(2)
        with PortalClient(server, settings.token or (stored.token if stored else None)) as c:
            try:
                board = c.leaderboard(track)
            except PortalError as exc:
                raise fail(exc) from exc
        console.print(leaderboard_table(board))


def leaderboard_table(board: dict[str, Any]) -> Table:
    table = Table(title=f"Leaderboard: {board['metric']} ({board['direction']} is better)")
    for column in ("#", "participant", "score", "95% interval", "TPOT p50", "TTFT p50", "tok/s"):
        table.add_column(column)

    def cells(entry: dict[str, Any], rank: str) -> list[str]:
        ci = entry.get("score_ci")
        tied = " (tied)" if entry.get("statistically_tied") else ""
        return [
            rank,
            entry["participant"] + tied,
            _shown(entry["score"]),
            _shown(ci) if ci else "",
            _shown(entry["tpot_p50_ms"]) if entry.get("tpot_p50_ms") is not None else "",
            _shown(entry["ttft_p50_ms"]) if entry.get("ttft_p50_ms") is not None else "",
            _shown(entry["output_tokens_per_s"])
            if entry.get("output_tokens_per_s") is not None
            else "",
        ]

    for entry in board["entries"]:
        table.add_row(*cells(entry, str(entry["rank"])))
    for entry in board["baselines"]:
        table.add_row(*cells(entry, "baseline"), style="dim")
    return table

"""`edc login`, `edc submit`, `edc status`, `edc logs`, `edc leaderboard`: the participant's CLI.

The portal and token come from ``edc login`` (stored in the user's config folder), overridden by
``EDC_SERVER`` / ``EDC_TOKEN``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from edc.cli.client import (
    Credentials,
    PortalClient,
    PortalError,
    archive_for,
    load_credentials,
    save_credentials,
)
from edc.config import Settings, get_settings

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


def _settings() -> Settings:
    try:
        return get_settings()
    except ValueError as exc:
        err_console.print(f"[red]Configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


def config_dir(settings: Settings) -> Path:
    return settings.cli_config_dir or Path(typer.get_app_dir("edc"))


def connect(settings: Settings | None = None) -> PortalClient:
    """A client for the configured portal with the configured token; exits when there is none."""
    settings = settings or _settings()
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
    err_console.print(f"[red]{exc.message}[/red]")
    if exc.retry_after_s:
        err_console.print(f"Retry after {exc.retry_after_s} s.")
    return typer.Exit(1)


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
        ("throughput (tokens/s)", ("throughput", "output_tokens_per_s")),
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
        name: Annotated[str, typer.Option(prompt="User name")],
        password: Annotated[str, typer.Option(prompt=True, hide_input=True)],
        label: Annotated[str, typer.Option(help="What the token is for.")] = "cli",
    ) -> None:
        """Log in and store an API token for the other commands."""
        settings = _settings()
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
    ) -> None:
        """Upload a submission, then follow it live; exits non-zero unless it completes."""
        with connect() as client:
            try:
                with archive_for(path) as archive:
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
                            on_progress=lambda sent, total: progress.update(
                                task, completed=min(sent, size), total=max(size, 1)
                            ),
                        )
                console.print(f"Submission [bold]{created['id']}[/bold] accepted.")
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
                raise fail(exc) from exc

    @app.command()
    def logs(submission_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
        """Print the logs you may read (admins: the full logs too)."""
        with connect() as client:
            try:
                body = client.logs(submission_id)
            except PortalError as exc:
                raise fail(exc) from exc
        console.rule("logs of the run on public prompts")
        console.print(body.get("public_logs") or "(none)", markup=False, highlight=False)
        if body.get("logs") is not None:
            console.rule("full logs (admin)")
            console.print(body["logs"] or "(none)", markup=False, highlight=False)

    @app.command()
    def leaderboard() -> None:
        """Print the leaderboard."""
        settings = _settings()
        stored = load_credentials(config_dir(settings))
        server = settings.server or (stored.server if stored else None)
        if not server:
            err_console.print("[red]No portal configured.[/red] Run `edc login --server URL`.")
            raise typer.Exit(2)
        with PortalClient(server, settings.token or (stored.token if stored else None)) as c:
            try:
                board = c.leaderboard()
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

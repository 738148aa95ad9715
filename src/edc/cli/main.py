"""`edc`: one command line for operators, admins and participants."""

from __future__ import annotations

import enum
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from edc import __version__, db
from edc.cli import admin as cli_admin
from edc.cli import participant as cli_participant
from edc.cli import runtime as cli_runtime
from edc.cli import teams as cli_teams
from edc.cli.configured import refusals_exit, settings_or_exit
from edc.errors import EdcError
from edc.lifetime import die_with_parent

if TYPE_CHECKING:
    from edc.services.rules import Limits

app = typer.Typer(help="Efficient-Decode Competition platform.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
task_app = typer.Typer(help="Competition tasks (model, prompts, rules).", no_args_is_help=True)
app.add_typer(task_app, name="task")
track_app = typer.Typer(
    help="Tracks: the tasks this platform runs, each with its own leaderboard.",
    no_args_is_help=True,
)
app.add_typer(track_app, name="track")

console = Console()
err_console = Console(stderr=True)


def _supervised() -> None:
    """Under `edc up`: stop when it dies, even by SIGKILL, instead of running on orphaned."""
    from edc.cli.supervisor import SUPERVISED_ENV

    if os.environ.get(SUPERVISED_ENV) == "1":
        die_with_parent(signal.SIGTERM)


def _setup_logging() -> None:
    from edc.observability.logging import configure_logging

    configure_logging(json=settings_or_exit().log_format == "json")


@app.command()
def version() -> None:
    """Print the platform's version."""
    console.print(__version__)


@app.command()
def up(
    host: Annotated[str, typer.Option(help="Address the portal listens on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port of the portal (checked free first).")
    ] = 8000,
    workers: Annotated[int, typer.Option(min=0, help="Worker processes to run.")] = 1,
    example: Annotated[
        Path | None,
        typer.Option(help="On a platform with no submissions yet, submit this example first."),
    ] = None,
) -> None:
    """Run everything on this machine: database migration, Redis, the portal and workers."""
    from edc.cli.supervisor import run_up

    _setup_logging()
    settings = settings_or_exit()

    def announce(url: str) -> None:
        console.print(f"[bold green]Efficient-Decode Competition is up:[/bold green] {url}")
        console.print("Stop with Ctrl-C.")

    try:
        code = run_up(
            settings, host=host, port=port, workers=workers, on_ready=announce, example=example
        )
    except EdcError as exc:
        # The message may quote the portal's own lines: no markup in them.
        err_console.print(
            f"[red]Cannot start:[/red] {escape(exc.message)}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(2) from exc
    raise typer.Exit(code)


@app.command()
def portal(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1, max=64, help="Processes serving the port (default: EDC_PORTAL_PROCESSES, 1)."
        ),
    ] = None,
) -> None:
    """Run the web portal and API (production: behind a reverse proxy)."""
    from edc.cli.portal_processes import serve

    _supervised()
    _setup_logging()
    settings = settings_or_exit()
    code = serve(
        processes or settings.portal_processes,
        host=host,
        port=port,
        log_level="info",
        # uvicorn's own lines go through our logging (JSON when asked); the portal writes access
        # lines.
        log_config=None,
        access_log=False,
        # Forwarded headers only from the proxies the organiser named (uvicorn's default trusts
        # any local process, so a client on the same host could pick its address).
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or "",
    )
    if code:
        raise typer.Exit(code)


@app.command()
def worker(
    burst: Annotated[bool, typer.Option(help="Exit when the queue is empty.")] = False,
    name_suffix: Annotated[
        str | None, typer.Option(help="Distinguishes several workers on one host.")
    ] = None,
) -> None:
    """Run a worker: take submission ids from the queue and evaluate them in a sandbox."""
    from edc.worker import process  # the harness and sandbox load only for this command

    _supervised()
    _setup_logging()
    settings = settings_or_exit()
    try:
        ready = process.prepare(settings, name_suffix=name_suffix)
    except EdcError as exc:
        err_console.print(f"[red]Refusing to start:[/red] {exc.message}")
        raise typer.Exit(3) from exc
    try:
        process.serve(ready, burst=burst)
    except EdcError as exc:
        err_console.print(f"[red]Worker stopped:[/red] {exc.message}")
        raise typer.Exit(3) from exc


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply database migrations (safe to run repeatedly)."""
    settings = settings_or_exit()
    db.upgrade(settings, revision)
    console.print(f"Database at {revision}: {settings.resolved_database_url.split('@')[-1]}")


class EvalSandbox(enum.StrEnum):
    auto = "auto"
    bwrap = "bwrap"
    docker = "docker"
    none = "none"


@app.command("eval")
def eval_command(
    path: Annotated[Path, typer.Argument(help="A submission: a directory or a zip.")],
    task: Annotated[
        Path | None, typer.Option(help="Task directory (default: the configured task).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    sandbox: Annotated[
        EvalSandbox | None,
        typer.Option(
            help="The sandbox (default: EDC_SANDBOX). none: no sandbox at all, for your own "
            "code where none can start; never available to a worker."
        ),
    ] = None,
) -> None:
    """Evaluate a submission exactly as the worker does (same code, same sandbox)."""
    from edc.cli.local_eval import run_eval

    chosen = sandbox.value if sandbox else None
    raise typer.Exit(run_eval(path, task, as_json, settings_or_exit(), chosen))


@task_app.command("init")
def task_init(
    out: Annotated[Path, typer.Option(help="The task directory to create.")],
    model: Annotated[
        Path | None, typer.Option(help="Local Hugging Face Llama-layout checkpoint.")
    ] = None,
    prompts: Annotated[
        Path | None, typer.Option(help='JSON lines of {"id": ..., "text": ...}.')
    ] = None,
    hidden_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of prompts kept hidden on the server.")
    ] = 0.5,
    name: Annotated[str | None, typer.Option(help="Task name (default: the folder's).")] = None,
    synthetic: Annotated[
        str | None,
        typer.Option(
            help="Instead of a checkpoint: a task of this name with Llama-3.2-1B's shape and "
            "seeded random weights (3 GB), nothing downloaded."
        ),
    ] = None,
    small: Annotated[
        bool, typer.Option(help="With --synthetic: the same recipe at a few MB, for tests.")
    ] = False,
) -> None:
    """Build a task directory from a checkpoint and a prompts file, or a synthetic one."""
    try:
        if synthetic is not None:
            if model is not None or prompts is not None:
                raise typer.BadParameter("--synthetic builds its own model and prompts")
            from edc.tasks.synthetic import build_synthetic_task

            build_synthetic_task(out, synthetic, small=small)
        else:
            if model is None or prompts is None:
                raise typer.BadParameter("give --model and --prompts, or --synthetic NAME")
            from edc.tasks.init import init_task

            init_task(model, prompts, out, hidden_fraction, name=name)
    except EdcError as exc:
        err_console.print(f"[red]Cannot build the task:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    console.print(f"Task written to {out}")


_PER_DAY = typer.Option(
    "--per-day", min=1, help="Submissions per participant per 24 hours (default: the platform's)."
)
_MAX_WAITING = typer.Option(
    "--max-waiting", min=1, help="Waiting submissions per participant (default: the platform's)."
)


@track_app.command("add")
def track_add(
    name: Annotated[str, typer.Argument(help="The track's name (lowercase, digits, - or _).")],
    directory: Annotated[Path, typer.Argument(help="Its task directory (with task.toml).")],
    opens: Annotated[
        datetime | None,
        typer.Option(help="When its uploads open, UTC (default: the platform's start)."),
    ] = None,
    closes: Annotated[
        datetime | None,
        typer.Option(help="When its uploads close, UTC (default: the platform's end)."),
    ] = None,
    per_day: Annotated[int | None, _PER_DAY] = None,
    max_waiting: Annotated[int | None, _MAX_WAITING] = None,
) -> None:
    """Register a task directory as a new track, with its own upload window and limits if
    given."""
    from edc.services.tracks import add_track

    settings = settings_or_exit()
    with refusals_exit("Cannot add the track"), db.database_errors():
        with db.session_scope(settings) as session:  # committed before the task is read again
            track = add_track(
                session,
                settings,
                name=name,
                task_dir=directory,
                opens_at=opens.replace(tzinfo=UTC) if opens else None,
                closes_at=closes.replace(tzinfo=UTC) if closes else None,
                submissions_per_day=per_day,
                max_queued_per_user=max_waiting,
            )
        task = track.task()
    console.print(
        f"Track [bold]{escape(track.name)}[/bold]: {escape(task.name)} {escape(task.version)}, "
        f"hardware class {escape(task.hardware.kind)}, from {escape(str(track.task_dir))}; "
        f"{_limits_text(track.limits(settings))}."
    )


@track_app.command("limits")
def track_limits(
    name: Annotated[str, typer.Argument(help="The track whose limits change.")],
    per_day: Annotated[int | None, _PER_DAY] = None,
    max_waiting: Annotated[int | None, _MAX_WAITING] = None,
) -> None:
    """Set a track's own limits per participant; one not given is the platform's again."""
    from edc.services.tracks import set_track_limits

    settings = settings_or_exit()
    with (
        refusals_exit("Cannot set the limits"),
        db.database_errors(),
        db.session_scope(settings) as session,
    ):
        track = set_track_limits(
            session, settings, name, submissions_per_day=per_day, max_queued_per_user=max_waiting
        )
    console.print(f"Track {escape(track.name)}: {_limits_text(track.limits(settings))}.")


@track_app.command("webhook")
def track_webhook(
    name: Annotated[str, typer.Argument(help="The track whose notifications change.")],
    url: Annotated[
        str | None,
        typer.Argument(
            help="An http(s) URL taking JSON (a Slack or Discord webhook).", show_default=False
        ),
    ] = None,
    off: Annotated[
        bool, typer.Option("--off", help="Send this track's notifications nowhere.")
    ] = False,
) -> None:
    """Post a track's new rank 1 and its published final leaderboard to a webhook URL."""
    from edc.services.tracks import set_track_webhook

    if off == (url is not None):
        raise typer.BadParameter("Give either a webhook URL or --off, not both.")
    settings = settings_or_exit()
    with (
        refusals_exit("Cannot set the webhook"),
        db.database_errors(),
        db.session_scope(settings) as session,
    ):
        track = set_track_webhook(session, settings, name, url=None if off else url)
    # The URL is a secret: not echoed (it would stay in terminal scrollback and CI logs).
    state = "posted to its webhook" if track.webhook_url else "sent nowhere"
    console.print(f"Track {escape(track.name)}: notifications are {state}.")


def _limits_text(limits: Limits) -> str:
    return (
        f"{limits.per_day} submissions per participant per 24 hours, "
        f"{limits.max_waiting} waiting at once"
    )


@track_app.command("final")
def track_final(
    name: Annotated[str, typer.Argument(help="The track whose final phase opens.")],
    top: Annotated[int, typer.Option("--top", min=1, help="Top entries to re-measure.")] = 10,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Measurements of each.")] = 3,
) -> None:
    """Open a track's final phase (at or after the window's end): its uploads close and its top
    entries are re-measured; the final board is published when every measurement is in, and never
    changes. `edc admin finalize --track NAME` does the same over the API; this works on this
    server's database."""
    from edc.services.phases import open_final

    settings = settings_or_exit()
    with refusals_exit("Cannot open the final phase"):
        final = open_final(settings, name, top_k=top, rounds=rounds, requested_by="edc track")
    console.print(
        f"Track {escape(name)} is in its final phase: uploads are closed. Final {final.id}: "
        f"{final.top_k} entries × {final.rounds} rounds on a {escape(final.hardware_class)} "
        "worker; follow it with `edc admin finals`."
    )


@track_app.command("list")
def track_list() -> None:
    """The platform's tracks."""
    from rich.table import Table

    from edc.services.tracks import list_tracks

    settings = settings_or_exit()
    table = Table(title="Tracks")
    columns = ("track", "phase", "task", "hardware class", "ranked by", "limits", "task directory")
    for column in columns:
        table.add_column(column)
    with (
        refusals_exit("Cannot list the tracks"),
        db.database_errors(),
        db.session_scope(settings) as session,
    ):
        for track in list_tracks(session, settings):
            task = track.task()
            table.add_row(
                track.name + (" (default)" if track.is_default else ""),
                track.phase,
                f"{task.name} {task.version}",
                task.hardware.kind,
                f"{task.ranking.metric} ({task.ranking.direction})",
                "{0.per_day}/day, {0.max_waiting} waiting".format(track.limits(settings)),
                str(track.task_dir),
            )
    console.print(table)


@task_app.command("import-pool")
def task_import_pool(
    file: Annotated[Path, typer.Argument(help='JSON lines of {"id": ..., "text"|"tokens": ...}.')],
) -> None:
    """Replace the task's hidden prompt pool (kept in the database, shared by every worker)."""
    from edc.tasks.pool import import_pool
    from edc.tasks.task import load_task

    settings = settings_or_exit()
    try:
        count = import_pool(settings, load_task(settings), file)
    except EdcError as exc:
        err_console.print(f"[red]Cannot import the pool:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    console.print(f"The hidden pool now holds {count} prompts.")


@task_app.command("export-pool")
def task_export_pool(
    file: Annotated[Path, typer.Argument(help="Where to write the pool (JSON lines of tokens).")],
) -> None:
    """Write the task's hidden prompt pool to a file (seeding it first if there is none)."""
    from edc.tasks.pool import export_pool, hidden_pool
    from edc.tasks.task import load_task

    settings = settings_or_exit()
    task = load_task(settings)
    try:
        hidden_pool(settings, task)
        count = export_pool(settings, task, file)
    except (EdcError, OSError) as exc:
        err_console.print(f"[red]Cannot export the pool:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"Wrote {count} prompts to {file}.")


cli_participant.register(app)
cli_teams.register(app)
cli_admin.register(app)
cli_runtime.register(app, task_app)


def main() -> None:
    app(prog_name="edc")


if __name__ == "__main__":
    main()

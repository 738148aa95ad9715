"""`edc`: one command line for operators, admins and participants."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edc import __version__, cli_admin, cli_participant, db
from edc.config import Settings, get_settings
from edc.errors import EdcError
from edc.lifetime import die_with_parent

app = typer.Typer(help="Efficient-Decode Competition platform.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
task_app = typer.Typer(help="Competition tasks (model, prompts, rules).", no_args_is_help=True)
app.add_typer(task_app, name="task")

console = Console()
err_console = Console(stderr=True)


def _settings() -> Settings:
    try:
        return get_settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        err_console.print(f"[red]Configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _supervised() -> None:
    """Under `edc up`: stop when it dies, even by SIGKILL, instead of running on orphaned."""
    from edc.supervisor import SUPERVISED_ENV

    if os.environ.get(SUPERVISED_ENV) == "1":
        die_with_parent(signal.SIGTERM)


def _setup_logging() -> None:
    from edc.observability.logging import configure_logging

    configure_logging(json=_settings().log_format == "json")


@app.command()
def version() -> None:
    """Print the platform's version."""
    console.print(__version__)


@app.command()
def up(
    host: Annotated[str, typer.Option(help="Address the portal listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the portal.")] = 8000,
    workers: Annotated[int, typer.Option(min=0, help="Worker processes to run.")] = 1,
    example: Annotated[
        Path | None,
        typer.Option(help="On a platform with no submissions yet, submit this example first."),
    ] = None,
) -> None:
    """Run everything on this machine: database migration, Redis, the portal and workers."""
    from edc.supervisor import run_up

    _setup_logging()
    settings = _settings()

    def announce(url: str) -> None:
        console.print(f"[bold green]Efficient-Decode Competition is up:[/bold green] {url}")
        console.print("Stop with Ctrl-C.")

    try:
        code = run_up(
            settings, host=host, port=port, workers=workers, on_ready=announce, example=example
        )
    except EdcError as exc:
        err_console.print(f"[red]Cannot start:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    raise typer.Exit(code)


@app.command()
def portal(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the web portal and API (production: behind a reverse proxy)."""
    import uvicorn

    _supervised()
    _setup_logging()
    _settings()
    # uvicorn's own lines go through our logging (JSON when asked); the portal writes access lines.
    uvicorn.run(
        "edc.portal.app:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="info",
        log_config=None,
        access_log=False,
    )


@app.command()
def worker(
    burst: Annotated[bool, typer.Option(help="Exit when the queue is empty.")] = False,
    name_suffix: Annotated[
        str | None, typer.Option(help="Distinguishes several workers on one host.")
    ] = None,
) -> None:
    """Run a worker: take submission ids from the queue and evaluate them in a sandbox."""
    from edc.harness.evaluate import load_task
    from edc.observability.logging import log_context
    from edc.sandbox.cpus import check_enough, worker_cpus
    from edc.sandbox.select import choose_sandbox
    from edc.scheduler.queue import announce_worker, make_worker, retire_worker
    from edc.scheduler.reconcile import Reconciler
    from edc.tasks.pool import hidden_pool
    from edc.worker import canary, provenance
    from edc.worker import executor as _job  # noqa: F401  (loaded once here, not in each job)
    from edc.worker.drift import DriftWatch

    _supervised()
    _setup_logging()
    settings = _settings()
    try:
        cpus = worker_cpus(settings)
        sandbox = choose_sandbox(settings)
    except EdcError as exc:
        err_console.print(f"[red]Refusing to start:[/red] {exc.message}")
        raise typer.Exit(3) from exc
    # The slot is stable across restarts, so a restarted worker finds the sandboxes its killed
    # predecessor left (and only those: the deployment part keeps apart several platforms on one
    # host); the random part keeps RQ from refusing a name still registered.
    slot = settings.worker_id or (
        f"{socket.gethostname()}-{name_suffix or 'w'}-{settings.deployment_id}"
    )
    name = f"{slot}-{uuid.uuid4().hex[:6]}"
    removed = sandbox.remove_leftovers({"slot": slot})
    logging.getLogger("edc.worker").info(
        "worker %s: sandbox %s (%s); removed %d leftover sandboxes",
        name,
        sandbox.name,
        sandbox.describe_isolation(),
        removed,
    )
    logging.getLogger("edc.worker").info("worker %s: %s", name, cpus.describe())
    try:
        canary.check_in_child()  # nothing of the platform may be visible inside its sandboxes
        task = load_task(settings)
        check_enough(cpus.owned, task.limits.cpus)
        provenance.warm(settings, task)
        # Seeded (once per platform) before the first job, not in the middle of one.
        db.retry_while_unreachable(
            settings, lambda: hidden_pool(settings, task), what="preparing the hidden prompt pool"
        )
    except EdcError as exc:
        err_console.print(f"[red]Refusing to start:[/red] {exc.message}")
        raise typer.Exit(3) from exc
    watch = None
    if settings.drift_watch and task.baseline_dir is not None:
        watch = DriftWatch(settings, name, settings.hardware_class or task.spec.hardware.kind)
    hardware_class = settings.hardware_class or task.spec.hardware.kind
    try:
        announce_worker(settings, name, hardware_class=hardware_class, host=socket.gethostname())
    except EdcError as exc:
        err_console.print(f"[red]Refusing to start:[/red] {exc.message}")
        raise typer.Exit(3) from exc
    reconciler = Reconciler(settings)
    reconciler.start()
    try:
        rq_worker = make_worker(settings, name=name, hardware_class=hardware_class)
        if watch is not None:
            rq_worker.watch = watch
        # The forked work-horses inherit the context: every line carries the worker's name.
        with log_context(worker_id=name):
            rq_worker.work(burst=burst, with_scheduler=False)
    except EdcError as exc:
        err_console.print(f"[red]Worker stopped:[/red] {exc.message}")
        raise typer.Exit(3) from exc
    finally:
        reconciler.stop()
        with contextlib.suppress(EdcError):
            retire_worker(settings, name)
            if watch is not None:
                watch.forget()


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply database migrations (safe to run repeatedly)."""
    settings = _settings()
    db.upgrade(settings, revision)
    console.print(f"Database at {revision}: {settings.resolved_database_url.split('@')[-1]}")


@app.command("eval")
def eval_command(
    path: Annotated[Path, typer.Argument(help="A submission: a directory or a zip.")],
    task: Annotated[
        Path | None, typer.Option(help="Task directory (default: the configured task).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Evaluate a submission exactly as the worker does (same code, same sandbox)."""
    from edc.harness.eval_cli import run_eval

    raise typer.Exit(run_eval(path, task, as_json, _settings()))


@task_app.command("init")
def task_init(
    model: Annotated[Path, typer.Option(help="Local Hugging Face Llama-layout checkpoint.")],
    prompts: Annotated[Path, typer.Option(help='JSON lines of {"id": ..., "text": ...}.')],
    out: Annotated[Path, typer.Option(help="The task directory to create.")],
    hidden_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of prompts kept hidden on the server.")
    ] = 0.5,
    name: Annotated[str | None, typer.Option(help="Task name (default: the folder's).")] = None,
) -> None:
    """Build a task directory from a checkpoint and a prompts file."""
    from edc.tasks.init import init_task

    try:
        init_task(model, prompts, out, hidden_fraction, name=name)
    except EdcError as exc:
        err_console.print(f"[red]Cannot build the task:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    console.print(f"Task written to {out}")


@task_app.command("import-pool")
def task_import_pool(
    file: Annotated[Path, typer.Argument(help='JSON lines of {"id": ..., "text"|"tokens": ...}.')],
) -> None:
    """Replace the task's hidden prompt pool (kept in the database, shared by every worker)."""
    from edc.harness.evaluate import load_task
    from edc.tasks.pool import import_pool

    settings = _settings()
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
    from edc.harness.evaluate import load_task
    from edc.tasks.pool import export_pool, hidden_pool

    settings = _settings()
    task = load_task(settings)
    try:
        hidden_pool(settings, task)
        count = export_pool(settings, task, file)
    except (EdcError, OSError) as exc:
        err_console.print(f"[red]Cannot export the pool:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"Wrote {count} prompts to {file}.")


cli_participant.register(app)
cli_admin.register(app)


def main() -> None:
    app(prog_name="edc")


if __name__ == "__main__":
    main()

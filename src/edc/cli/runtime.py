"""``edc env build`` and ``edc task check``: the decoder's runtime, built and checked.

::

    edc env build /srv/edc/envs/torch --with torch==2.13.0
    edc task check --task tasks/llama-1b       # exit 0 when the sandbox imports what it promises
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edc.cli.configured import refusals_exit, settings_or_exit
from edc.config import Settings
from edc.errors import EdcError

EXIT_OK = 0
EXIT_CANNOT = 2

console = Console()
err_console = Console(stderr=True)


def check_task(settings: Settings, task_dir: Path | None) -> int:
    """Load the task, then import each module its runtime promises inside the sandbox a worker
    here would use; prints a table and returns the exit code."""
    from edc.sandbox.backends import choose_sandbox
    from edc.sandbox.runtime import missing_imports, probe_imports
    from edc.tasks.task import load_task

    try:
        task = load_task(settings, task_dir)
        runtime = task.runtime
        sandbox = choose_sandbox(settings, runtime)
        found = probe_imports(sandbox, runtime.imports)
    except EdcError as exc:
        err_console.print(f"[red]The task cannot run here:[/red] {escape(exc.message)}")
        return EXIT_CANNOT
    table = Table(title=f"{task.name} {task.version}: what decoders may import")
    table.add_column("module")
    table.add_column("inside the sandbox")
    for name in runtime.imports:
        answer = found.get(name, {})
        shown = answer.get("version") or ("imports" if "version" in answer else None)
        table.add_row(name, shown or f"[red]{escape(answer.get('error', 'not probed'))}[/red]")
    console.print(table)
    console.print(f"Sandbox: {escape(sandbox.identity())}")
    missing = missing_imports(found, runtime.imports)
    if missing:
        err_console.print(
            f"[red]The runtime lacks what the task promises:[/red] {escape('; '.join(missing))}. "
            "Workers refuse jobs until it is there (`edc env build DIR --with ...`, then "
            "env = DIR in task.toml's runtime section; for Docker, its image)."
        )
        return EXIT_CANNOT
    console.print("The runtime offers everything the task promises.")
    return EXIT_OK


def register(app: typer.Typer, task_app: typer.Typer) -> None:
    """Add ``env build`` to ``app`` and ``check`` to ``task_app``."""
    env_app = typer.Typer(help="Decoder runtime environments.", no_args_is_help=True)
    app.add_typer(env_app, name="env")

    @env_app.command("build")
    def env_build(
        folder: Annotated[Path, typer.Argument(help="The environment to create (a new folder).")],
        with_: Annotated[
            list[str] | None,
            typer.Option("--with", help="A package to install (pip specifier); repeatable."),
        ] = None,
    ) -> None:
        """Build a runtime environment for decoders (a venv of the worker's Python; numpy is
        always in it), for the env key of task.toml's runtime section."""
        from edc.sandbox.runtime import build_environment

        with refusals_exit("Cannot build the environment", EXIT_CANNOT):
            packages = build_environment(
                folder.absolute(),
                tuple(with_ or ()),
                echo=lambda line: console.print(line, markup=False, highlight=False),
            )
        console.print(f"Built {folder.absolute()} (packages in {packages}). In task.toml:")
        console.print(f'[runtime]\nenv = "{folder.absolute()}"', markup=False)
        console.print(
            "and list in [runtime] imports the modules decoders may rely on.", markup=False
        )

    @task_app.command("check")
    def task_check(
        task: Annotated[
            Path | None, typer.Option(help="Task directory (default: the configured task).")
        ] = None,
    ) -> None:
        """Check the task loads and its sandbox imports every module its runtime promises."""
        raise typer.Exit(check_task(settings_or_exit(), task))

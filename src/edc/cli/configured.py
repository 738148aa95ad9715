"""The platform's settings for a command, or a clear error and exit code 2 when they are invalid."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from edc.config import Settings, get_settings
from edc.errors import EdcError

EXIT_CONFIGURATION = 2


def settings_or_exit() -> Settings:
    try:
        return get_settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        Console(stderr=True).print(f"[red]Configuration error:[/red] {exc}")
        raise typer.Exit(EXIT_CONFIGURATION) from exc


@contextmanager
def refusals_exit(what: str, code: int = EXIT_CONFIGURATION) -> Iterator[None]:
    """An EdcError inside becomes ``what: its message`` on stderr and exit ``code``."""
    try:
        yield
    except EdcError as exc:
        Console(stderr=True).print(f"[red]{what}:[/red] {escape(exc.message)}")
        raise typer.Exit(code) from exc

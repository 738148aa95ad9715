"""The platform's settings for a command, or a clear error and exit code 2 when they are invalid."""

from __future__ import annotations

import typer
from rich.console import Console

from edc.config import Settings, get_settings

EXIT_CONFIGURATION = 2


def settings_or_exit() -> Settings:
    try:
        return get_settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        Console(stderr=True).print(f"[red]Configuration error:[/red] {exc}")
        raise typer.Exit(EXIT_CONFIGURATION) from exc

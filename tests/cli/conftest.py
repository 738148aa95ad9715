"""The CLI's fixtures: the participant's and organiser's commands as one app; and, since `edc eval`
runs exactly the harness's evaluation, the harness's fixtures."""

import pytest
import typer

from edc.cli import admin as cli_admin
from edc.cli import participant as cli_participant
from tests.harness.conftest import (  # noqa: F401 - fixtures, used by name
    bwrap_sandbox,
    harness_settings,
    make_task,
    small_task,
)


@pytest.fixture
def edc() -> typer.Typer:
    """`edc`'s participant and admin commands, to run with CliRunner."""
    app = typer.Typer()
    cli_participant.register(app)
    cli_admin.register(app)
    return app

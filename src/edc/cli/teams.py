"""`edc team ...`: a participant's team, through the portal's API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from edc.cli.client import PortalClient, PortalError
from edc.cli.participant import connect, fail

console = Console()
T = TypeVar("T")


def _show(team: dict[str, Any]) -> None:
    console.print(
        f"Team [bold]{escape(team['name'])}[/bold]: {escape(', '.join(team['members']))} "
        f"({len(team['members'])} of at most {team['max_size']})."
    )
    console.print(f"Invite code: {escape(team['invite_code'])}")
    console.print(f"Others join with `edc team join {escape(team['invite_code'])}`.")


def register(app: typer.Typer) -> None:
    """Add `edc team` to ``app``."""
    team_app = typer.Typer(
        help="Teams: members share limits and one leaderboard row per track.",
        no_args_is_help=True,
    )
    app.add_typer(team_app, name="team")

    @team_app.command("create")
    def create(name: Annotated[str, typer.Argument(help="The team's name.")]) -> None:
        """Create a team of you alone and print its invite code."""
        _show(_asked(lambda client: client.create_team(name)))

    @team_app.command("join")
    def join(
        code: Annotated[str, typer.Argument(help="The invite code a member gave you.")],
    ) -> None:
        """Join a team with its invite code."""
        _show(_asked(lambda client: client.join_team(code)))

    @team_app.command("show")
    def show() -> None:
        """Your team, its members and invite code."""
        _show(_asked(lambda client: client.my_team()))

    @team_app.command("leave")
    def leave() -> None:
        """Leave your team."""
        _asked(lambda client: client.leave_team())
        console.print("You have left your team.")


def _asked(call: Callable[[PortalClient], T]) -> T:
    """``call`` on the configured portal; a refusal is printed and ends the command."""
    with connect() as client:
        try:
            return call(client)
        except PortalError as exc:
            raise fail(exc) from exc

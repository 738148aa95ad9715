"""`edc user …` (on the server's own database) and `edc admin …` (over the API, as an admin).

``edc user create NAME --admin --password`` is how the first admin comes to be: it writes the
account straight into the configured database, with the password asked for (the web pages' log-in),
and prints an API token for it (the CLI's). ``edc admin rescore`` also
works on the server's own database and task (the portal runs the same at every start).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edc import db
from edc.cli.client import PortalError
from edc.cli.configured import EXIT_CONFIGURATION, settings_or_exit
from edc.cli.participant import connect, fail, result_table
from edc.errors import EdcError
from edc.models import DEFAULT_TRACK
from edc.services import accounts, rescore

console = Console()
err_console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add ``edc user`` and ``edc admin`` to ``app``."""
    user_app = typer.Typer(help="Accounts, on this server's database.", no_args_is_help=True)
    admin_app = typer.Typer(
        help="Organisers' actions, over the API (`rescore`: on this server's database).",
        no_args_is_help=True,
    )
    app.add_typer(user_app, name="user")
    app.add_typer(admin_app, name="admin")

    @user_app.command("create")
    def user_create(
        name: Annotated[str, typer.Argument(help="User name (2–40 letters, digits, _ . -).")],
        admin: Annotated[bool, typer.Option("--admin", help="Give it the admin role.")] = False,
        password: Annotated[
            bool,
            typer.Option(
                "--password", help="Ask for a password: the web log-in (admin pages included)."
            ),
        ] = False,
    ) -> None:
        """Create an account and print an API token for it (shown once)."""
        settings = settings_or_exit()
        secret = None
        if password:
            secret = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        try:
            db.upgrade(settings)
            with db.session_scope(settings) as session:
                user = accounts.create_user(session, name=name, password=secret, is_admin=admin)
                token = accounts.issue_api_token(session, user=user, label="edc user create")
                made = user.name
        except EdcError as exc:
            err_console.print(f"[red]{exc.message}[/red]")
            raise typer.Exit(1) from exc
        role = "admin" if admin else "participant"
        err_console.print(f"Created {role} [bold]{made}[/bold].")
        if secret is None:
            pages = "the admin pages" if admin else "the web pages"
            err_console.print(
                f"It has no password, so it cannot log in on {pages}: set one with "
                f"`edc user password {made}` (or create it with --password).",
                highlight=False,
                soft_wrap=True,
            )
        # The token comes last, alone on stdout: scripts take the last line.
        err_console.print("API token (shown once):")
        console.print(token)

    @user_app.command("password")
    def user_password(
        name: Annotated[str, typer.Argument()],
        revoke_tokens: Annotated[
            bool, typer.Option(help="Also revoke the account's API tokens (a stolen CLI token).")
        ] = False,
    ) -> None:
        """Set an account's password (for the web log-in); its browser sessions end, and the
        addresses it logged in from lose their exemption from its log-in throttle."""
        settings = settings_or_exit()
        secret = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
        try:
            with db.session_scope(settings) as session:
                user = accounts.user_by_name(session, name)
                if user is None:
                    raise EdcError(f"There is no user {name!r}.")
                revoked = accounts.set_password(
                    session, user=user, password=secret, revoke_api_tokens=revoke_tokens
                )
        except EdcError as exc:
            err_console.print(f"[red]{exc.message}[/red]")
            raise typer.Exit(1) from exc
        tokens = (
            f"revoked its {revoked.api_tokens} API token(s)"
            if revoke_tokens
            else "its API tokens still work (--revoke-tokens revokes them)"
        )
        err_console.print(
            f"Password of {name} set; ended its {revoked.web_sessions} browser session(s); "
            f"{tokens}; forgot the {revoked.known_addresses} address(es) it logged in from."
        )

    def act(submission_id: int, action: str, body: dict[str, object] | None = None) -> None:
        with connect() as client:
            try:
                result = client.admin_action(submission_id, action, body)
            except PortalError as exc:
                raise fail(exc) from exc
        console.print(result_table(result))
        if result.get("review"):
            console.print(f"review: {result['review']}")

    @admin_app.command()
    def rerun(submission_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
        """Evaluate a finished submission again (a new attempt)."""
        act(submission_id, "rerun")

    @admin_app.command()
    def cancel(submission_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
        """Cancel a queued or running submission."""
        act(submission_id, "cancel")

    @admin_app.command()
    def disqualify(
        submission_id: Annotated[int, typer.Argument(metavar="ID")],
        reason: Annotated[str | None, typer.Option(help="Shown to the participant.")] = None,
    ) -> None:
        """Keep a submission off the leaderboard."""
        act(submission_id, "disqualify", {"reason": reason})

    @admin_app.command()
    def restore(submission_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
        """Undo a disqualification."""
        act(submission_id, "restore")

    @admin_app.command("clear-review")
    def clear_review(submission_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
        """Accept a result flagged as faster than the task's physical floor (it stays ranked).

        To reject it instead, disqualify the submission.
        """
        act(submission_id, "clear-review")

    @admin_app.command("rescore")
    def rescore_command(
        track: Annotated[
            str | None,
            typer.Option(help="Also measure again the best rows of this track's old board."),
        ] = None,
        top: Annotated[
            int, typer.Option("--top", min=1, help="With --track: how many leaderboard rows.")
        ] = 10,
    ) -> None:
        """Bring stored results in line with each track's ranking metric and result version (on
        this server's database); with --track, queue re-measurements of the best stale rows.

        Results ranked under another metric are converted from their stored figures where that
        is exact, else marked stale; results of another task content or measurement version are
        marked stale (off the leaderboard, kept for their owners). Re-measurements run after
        participants' submissions and count against no limit. Safe to run again.
        """
        settings = settings_or_exit()
        try:
            with db.database_errors():
                for counts in rescore.rescore_configured(settings):
                    console.print(
                        f"track {counts.track}, ranked by {counts.metric}\n"
                        f"  re-scored from stored figures: {counts.rescored}\n"
                        f"  stale (another ranking rule): {counts.stale}\n"
                        f"  stale (another result version): {counts.outdated}"
                    )
                if track is not None:
                    queued = rescore.remeasure_stale(settings, track, top_k=top)
                    listed = ", ".join(str(i) for i in queued) or "none"
                    console.print(f"re-measurements queued ({len(queued)}): {listed}")
        except EdcError as exc:
            err_console.print(f"[red]{exc.message}[/red]")
            raise typer.Exit(1) from exc

    @admin_app.command()
    def baseline(
        submission_id: Annotated[int, typer.Argument(metavar="ID")],
        unmark: Annotated[bool, typer.Option("--unmark", help="Remove the mark.")] = False,
    ) -> None:
        """Mark a submission as a baseline (shown apart, unranked)."""
        act(submission_id, "baseline", {"baseline": not unmark})

    @admin_app.command("logs")
    def admin_logs(submission_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
        """Print a submission's full logs (hidden-prompt runs included)."""
        with connect() as client:
            try:
                body = client.logs(submission_id)
            except PortalError as exc:
                raise fail(exc) from exc
        console.print(body.get("logs") or "(none)", markup=False, highlight=False)

    @admin_app.command("queue")
    def show_queue() -> None:
        """The queue: its length, each waiting submission's position, what is running."""
        with connect() as client:
            try:
                state = client.admin_queue()
            except PortalError as exc:
                raise fail(exc) from exc
        table = Table(title=f"Queue: {state['length']} waiting")
        for column in ("position", "submission", "participant", "queued at", "attempt"):
            table.add_column(column)
        for item in state["items"]:
            table.add_row(
                str(item["position"]),
                str(item["id"]),
                item["owner"] or "",
                item["queued_at"],
                str(item["attempt"]),
            )
        console.print(table)
        for running in state["processing"]:
            console.print(
                f"processing: #{running['id']} of {running['owner'] or '?'} on "
                f"{running['worker_id'] or '?'} since {running['started_at']}"
            )

    @admin_app.command("workers")
    def show_workers() -> None:
        """The workers: alive or silent, busy with what, since when."""
        with connect() as client:
            try:
                workers = client.admin_workers()
            except PortalError as exc:
                raise fail(exc) from exc
        table = Table(title=f"{len(workers)} worker(s)")
        columns = ("worker", "class", "devices", "alive", "state", "submission", "busy since")
        for column in (*columns, "heartbeat"):
            table.add_column(column)
        for w in workers:
            table.add_row(
                w["name"],
                w.get("hardware_class") or "",
                ",".join(w.get("gpus") or []) or "cpu",
                ("yes" if w["alive"] else "no") + (" (drifting)" if w.get("drifting") else ""),
                w["state"],
                f"#{w['submission_id']} (attempt {w['attempt']})" if w["submission_id"] else "",
                w["busy_since"] or "",
                w["last_heartbeat"] or "",
            )
        console.print(table)

    @admin_app.command("finalize")
    def finalize(
        track: Annotated[
            str | None,
            typer.Option(help="The track whose final phase opens (default: the default track)."),
        ] = None,
        top: Annotated[
            int, typer.Option("--top", min=1, help="How many top entries to re-measure.")
        ] = 10,
        rounds: Annotated[
            int, typer.Option("--rounds", min=1, help="How many times to measure each.")
        ] = 3,
    ) -> None:
        """Open a track's final phase, at or after its window's end: its uploads close, and its
        provisional leaderboard's top entries are re-measured.

        One worker of the track's class measures every entry once, then again, round after
        round, when no submission waits for it; the completed final is the track's published
        final leaderboard, which never changes. Run again before then, it retries a final that
        failed or was lost. Re-measurements count against no participant's limits. A refusal
        (unknown track, window still open, final published, ...) exits 2.
        """
        with connect() as client:
            try:
                final = client.admin_finalize(top_k=top, rounds=rounds, track=track)
            except PortalError as exc:
                raise _refused(exc) from exc
        console.print(
            f"Track {escape(final.get('track') or DEFAULT_TRACK)} is in its final phase: "
            "uploads are closed. "
            f"Final {final['id']} {final['status']}: {final['top_k']} entries × "
            f"{final['rounds']} rounds on a {escape(final['hardware_class'])} worker. "
            "Follow it with `edc admin finals`."
        )

    @admin_app.command("finals")
    def show_finals() -> None:
        """The final rankings: status, progress, worker, how each ended."""
        with connect() as client:
            try:
                rows = client.admin_finals()
            except PortalError as exc:
                raise fail(exc) from exc
        table = Table(title=f"{len(rows)} final(s)")
        for column in ("final", "status", "entries × rounds", "measured", "worker", "finished"):
            table.add_column(column)
        table.add_column("note")
        for f in rows:
            failed = f" ({f['failed']} failed)" if f.get("failed") else ""
            table.add_row(
                str(f["id"]) + (f" ({f['track']})" if f.get("track") else ""),
                f["status"],
                f"{f['top_k']} × {f['rounds']}",
                f"{f['done']}/{f['planned']}{failed}",
                f.get("worker_id") or "",
                f.get("finished_at") or "",
                f.get("message") or "",
            )
        console.print(table)

    @admin_app.command("export")
    def export(
        what: Annotated[str, typer.Argument(help="leaderboard, final-leaderboard or submissions")],
        output: Annotated[
            Path | None, typer.Option("-o", "--output", help="File to write (default: stdout).")
        ] = None,
        track: Annotated[
            str | None,
            typer.Option(
                help="final-leaderboard: this track's published final (default: the default "
                "track's)."
            ),
        ] = None,
    ) -> None:
        """Export the leaderboard, the final ranking or every submission as CSV."""
        if what not in ("leaderboard", "final-leaderboard", "submissions"):
            err_console.print(
                "[red]Export `leaderboard`, `final-leaderboard` or `submissions`.[/red]"
            )
            raise typer.Exit(2)
        if track is not None and what != "final-leaderboard":
            err_console.print("[red]--track applies to `final-leaderboard` only.[/red]")
            raise typer.Exit(2)
        with connect() as client:
            try:
                text = client.admin_export(what, track=track)
            except PortalError as exc:
                raise fail(exc) from exc
        if output is None:
            console.print(text, end="", markup=False, highlight=False, soft_wrap=True)
        else:
            output.write_text(text)
            err_console.print(f"Wrote {output}.")


# The portal's refusals of what was asked (an unknown track, the state of the final) rather than
# of who asked (401, 403): the command exits 2 on them, as `edc track final` does.
_REFUSALS = frozenset({400, 404, 409, 422})


def _refused(exc: PortalError) -> typer.Exit:
    if exc.status not in _REFUSALS:
        return fail(exc)
    err_console.print(f"[red]Cannot open the final phase:[/red] {escape(exc.message)}")
    return typer.Exit(EXIT_CONFIGURATION)

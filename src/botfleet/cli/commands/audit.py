"""`botfleet audit`: the admin log (admin token)."""

from __future__ import annotations

import typer

from botfleet.cli import output
from botfleet.cli.session import connect


def audit(
    ctx: typer.Context,
    user_id: str | None = typer.Option(
        None, "--user", metavar="USER_ID", help="Only actions on this user and its keys."
    ),
    since: str | None = typer.Option(
        None, "--since", metavar="ISO_TIME", help="Only actions at or after (2026-01-01T00:00Z)."
    ),
    limit: int | None = typer.Option(
        None, "--limit", "-n", metavar="N", min=1, max=1000, help="How many (newest first)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON page, nothing else."),
) -> None:
    """Admin actions, newest first: users created, limits changed, users disabled, keys created
    or revoked, with what changed."""
    with connect(ctx, admin=True) as client:
        page = client.audit(user_id=user_id, since=since, limit=limit)
    if as_json:
        output.print_json(page)
        return
    output.console.print(output.audit_table(page["items"]))
    if page.get("next_cursor"):
        output.err.print("[dim]more actions: --json gives next_cursor; or narrow with --since[/]")

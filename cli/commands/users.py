"""`botfleet users …`: operator calls with the admin token (users, limits, keys)."""

from __future__ import annotations

import typer

from cli import help_format, output
from cli.session import connect

app = help_format.Typer(
    help="Users, their limits and API keys (admin token).", no_args_is_help=True
)
JsonOpt = typer.Option(False, "--json", help="Print the API's JSON document, nothing else.")
UserId = typer.Argument(..., metavar="USER_ID", help="The user's id (`users ls`).")


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="The user's name."),
    max_bots: int | None = typer.Option(
        None, "--max-bots", metavar="N", min=0, help="Concurrent bots."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Create a user and print its API key (shown this once; only its hash is stored)."""
    with connect(ctx, admin=True) as client:
        user = client.create_user(name, max_concurrent_bots=max_bots)
    if as_json:
        output.print_json(user)
        return
    output.err.print(
        f"user {output.escape(user['name'])} ({user['id']}), "
        f"max {user['max_concurrent_bots']} bots; "
        "the key below is shown this once",
        soft_wrap=True,
    )
    typer.echo(user["api_key"])


@app.command("ls")
def list_users(ctx: typer.Context, as_json: bool = JsonOpt) -> None:
    """Every user and its limit."""
    with connect(ctx, admin=True) as client:
        users = client.list_users()
    if as_json:
        output.print_json(users)
    else:
        output.console.print(output.users_table(users))


@app.command("limit")
def limit(
    ctx: typer.Context,
    user_id: str = UserId,
    max_bots: int = typer.Argument(..., metavar="MAX_BOTS", help="Concurrent bots."),
    as_json: bool = JsonOpt,
) -> None:
    """Set how many bots the user may run at once (0 allows none)."""
    with connect(ctx, admin=True) as client:
        user = client.set_limit(user_id, max_bots)
    if as_json:
        output.print_json(user)
    else:
        typer.echo(f"{user['id']} max_concurrent_bots={user['max_concurrent_bots']}")


@app.command("key")
def key(ctx: typer.Context, user_id: str = UserId, as_json: bool = JsonOpt) -> None:
    """Issue the user a new API key and print it (older keys keep working)."""
    with connect(ctx, admin=True) as client:
        created = client.create_key(user_id)
    if as_json:
        output.print_json(created)
    else:
        typer.echo(created["api_key"])

"""`botfleet users …`: operator calls with the admin token (users, limits, keys, disabling)."""

from __future__ import annotations

import typer

from botfleet.cli import help_format, output
from botfleet.cli.session import connect

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


@app.command("restart")
def default_restart(
    ctx: typer.Context,
    user_id: str = UserId,
    retries: int = typer.Option(0, "--retries", metavar="N", min=0, help="Relaunches."),
    backoff: float = typer.Option(5.0, "--backoff", metavar="SECONDS", min=0, help="First wait."),
    on: list[str] = typer.Option(
        [],
        "--on",
        metavar="TRIGGER",
        help="crash, heartbeat_lost, start_failed; repeatable (default: crash, heartbeat_lost).",
    ),
    clear: bool = typer.Option(False, "--clear", help="Remove the user's default policy."),
    as_json: bool = JsonOpt,
) -> None:
    """Set the restart policy of the user's bots that name none (relaunches keep their own)."""
    policy: dict[str, object] | None = None
    if not clear:
        policy = {"max_retries": retries, "backoff_s": backoff}
        if on:
            policy["on"] = on
    with connect(ctx, admin=True) as client:
        user = client.set_default_restart(user_id, policy)
    if as_json:
        output.print_json(user)
    else:
        typer.echo(f"{user['id']} default_restart={output_policy(user.get('default_restart'))}")


def output_policy(policy: dict[str, object] | None) -> str:
    return "none" if policy is None else " ".join(f"{k}={v}" for k, v in policy.items())


def _set_disabled(ctx: typer.Context, user_id: str, disabled: bool, as_json: bool) -> None:
    with connect(ctx, admin=True) as client:
        user = client.set_disabled(user_id, disabled)
    if as_json:
        output.print_json(user)
    else:
        typer.echo(f"{user['id']} {'disabled' if disabled else 'enabled'}")


@app.command("disable")
def disable(ctx: typer.Context, user_id: str = UserId, as_json: bool = JsonOpt) -> None:
    """Refuse every key of the user (401 at once); its bots run on (`bots stop` them as admin)."""
    _set_disabled(ctx, user_id, True, as_json)


@app.command("enable")
def enable(ctx: typer.Context, user_id: str = UserId, as_json: bool = JsonOpt) -> None:
    """Accept the user's keys again."""
    _set_disabled(ctx, user_id, False, as_json)


keys = help_format.Typer(help="A user's API keys: list, create, revoke.", no_args_is_help=True)
app.add_typer(keys, name="keys")


@keys.command("ls")
def list_keys(ctx: typer.Context, user_id: str = UserId, as_json: bool = JsonOpt) -> None:
    """The user's live keys (never the keys themselves: their prefixes)."""
    with connect(ctx, admin=True) as client:
        rows = client.list_keys(user_id)
    if as_json:
        output.print_json(rows)
    else:
        output.console.print(output.keys_table(rows))


@keys.command("create")
def create_key(
    ctx: typer.Context,
    user_id: str = UserId,
    name: str | None = typer.Option(None, "--name", metavar="NAME", help="What it is for."),
    read_only: bool = typer.Option(
        False, "--read-only", help="Scope bots:read only: every write answers 403."
    ),
    expires_in: int | None = typer.Option(
        None, "--expires-in", metavar="SECONDS", min=1, help="Refused after this long."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Create a key and print it (shown this once; only its hash is stored)."""
    scopes = ["bots:read"] if read_only else None
    with connect(ctx, admin=True) as client:
        created = client.create_key(user_id, name=name, scopes=scopes, expires_in_s=expires_in)
    if as_json:
        output.print_json(created)
        return
    output.err.print(
        f"key {created['id']} ({','.join(created['scopes'])}); shown this once:", soft_wrap=True
    )
    typer.echo(created["api_key"])


@keys.command("revoke")
def revoke_key(
    ctx: typer.Context,
    user_id: str = UserId,
    key_id: str = typer.Argument(..., metavar="KEY_ID", help="The key's id (`users keys ls`)."),
) -> None:
    """Revoke a key: it answers 401 at once on every replica."""
    with connect(ctx, admin=True) as client:
        client.revoke_key(user_id, key_id)
    typer.echo(f"{key_id} revoked")

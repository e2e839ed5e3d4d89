"""The `botfleet` command: the API client's commands plus the manager's own (`serve`, …)."""

from __future__ import annotations

import typer

from botfleet.cli import help_format
from botfleet.cli.commands import audit, bots, dev, events, kinds, users
from botfleet.cli.config import Connection
from botfleet.manager.server_commands import app as manager_app

app = help_format.Typer(
    help="botfleet: a control plane for fleets of bots.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    url: str | None = typer.Option(
        None,
        "--url",
        metavar="URL",
        help="API base URL (env BOTFLEET_URL; default http://127.0.0.1:8080).",
    ),
    key: str | None = typer.Option(
        None,
        "--key",
        metavar="KEY",
        help="API key, or admin token for `users` (env BOTFLEET_KEY).",
    ),
) -> None:
    """Talk to a botfleet manager, or run one (`serve`, `migrate`, `create-user`)."""
    ctx.obj = Connection(url=url, key=key)


# The manager's commands, registered as they are (only their help is tidied), so `botfleet serve
# --welcome` is unchanged.
app.registered_commands.extend(map(help_format.adopt, manager_app.registered_commands))
app.add_typer(bots.app, name="bots")
app.add_typer(users.app, name="users")
kinds.app.command("export")(dev.export_kind)
app.add_typer(kinds.app, name="kinds")
app.add_typer(dev.app, name="dev")
app.command("events")(events.events)
app.command("audit")(audit.audit)

if __name__ == "__main__":
    app()

"""The `botfleet` command: the API client's commands plus the manager's own (`serve`, …).

A client command (`botfleet bots ls`) imports nothing of the manager: its commands are loaded
only when one of them runs or the root's help lists them. tests/integration/cli/
test_cli_imports.py checks what a simple command imports.
"""

from __future__ import annotations

from typing import Any

import typer

from botfleet.cli import help_format
from botfleet.cli.commands import audit, bots, dev, events, kinds, users, webhooks
from botfleet.cli.config import Connection


class _Root(help_format.Group):
    """The root group, which adds the manager's commands (`serve`, `migrate`, …) first, on
    demand: they live in botfleet.manager.server_commands, with the manager's settings."""

    _manager_loaded = False

    def _load_manager_commands(self) -> None:
        if self._manager_loaded:
            return
        from botfleet.manager.server_commands import app as manager_app

        # Registered as they are (only their help is tidied), so `botfleet serve --welcome`
        # is unchanged; listed first, as they always were.
        adopted = help_format.Typer()
        adopted.registered_commands.extend(map(help_format.adopt, manager_app.registered_commands))
        self.commands = {**typer.main.get_group(adopted).commands, **self.commands}
        self._manager_loaded = True

    def list_commands(self, ctx: Any) -> list[str]:
        self._load_manager_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands:
            self._load_manager_commands()
        return super().get_command(ctx, cmd_name)


app = help_format.Typer(
    cls=_Root,
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


app.add_typer(bots.app, name="bots")
app.add_typer(users.app, name="users")
kinds.app.command("export")(dev.export_kind)
app.add_typer(kinds.app, name="kinds")
app.add_typer(dev.app, name="dev")
app.add_typer(webhooks.app, name="webhooks")
app.command("events")(events.events)
app.command("audit")(audit.audit)

if __name__ == "__main__":
    app()

"""The `botfleet` command: the API client's commands plus the manager's own (`serve`, …).

A command's module is imported only when that command runs, or when the root's help lists them
all: `botfleet bots ls` imports nothing of the manager, nor of `users`, `dev` or `webhooks`
(issue 29: a simple command answers in under 0.3 s). tests/integration/cli/
test_cli_imports.py checks what a simple command imports.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer

from botfleet.cli import help_format
from botfleet.cli.config import Connection

#: The client's commands, in the order `botfleet --help` lists them (after the manager's): a
#: single command is a function, a group of them a Typer app, named "module:attribute".
COMMANDS = {
    "events": "botfleet.cli.commands.events:events",
    "audit": "botfleet.cli.commands.audit:audit",
    "bots": "botfleet.cli.commands.bots:app",
    "users": "botfleet.cli.commands.users:app",
    "kinds": "botfleet.cli.commands.kinds:app",
    "dev": "botfleet.cli.commands.dev:app",
    "webhooks": "botfleet.cli.commands.webhooks:app",
    "operations": "botfleet.cli.commands.operations:app",
    "schedules": "botfleet.cli.commands.schedules:app",
}


def _built(name: str, target: str) -> Any:
    """The click command typer builds for `target`, registered as `name` would be on the root
    (a group's help and options come from its Typer app, as with `app.add_typer`)."""
    module, _, attribute = target.partition(":")
    found = getattr(importlib.import_module(module), attribute)
    holder = help_format.Typer()
    if isinstance(found, typer.Typer):
        holder.add_typer(found, name=name)
    else:
        holder.command(name)(found)
    return typer.main.get_group(holder).commands[name]


class _Root(help_format.Group):
    """The root group, which loads its commands on demand: the client's from COMMANDS, and the
    manager's (`serve`, `migrate`, …, in botfleet.manager.server_commands, with the manager's
    settings), listed first as they always were."""

    _all_loaded = False

    def _load(self, name: str) -> None:
        if name not in self.commands:
            self.commands[name] = _built(name, COMMANDS[name])

    def _load_all(self) -> None:
        if self._all_loaded:
            return
        from botfleet.manager.server_commands import app as manager_app

        # Registered as they are (only their help is tidied), so `botfleet serve --welcome`
        # is unchanged.
        adopted = help_format.Typer()
        adopted.registered_commands.extend(map(help_format.adopt, manager_app.registered_commands))
        manager = typer.main.get_group(adopted).commands
        for name in COMMANDS:
            self._load(name)
        client = {name: self.commands.pop(name) for name in COMMANDS}
        self.commands = {**manager, **client, **self.commands}  # then any added to `app` itself
        self._all_loaded = True

    def list_commands(self, ctx: Any) -> list[str]:
        self._load_all()
        return super().list_commands(ctx)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in COMMANDS:
            self._load(cmd_name)
        elif cmd_name not in self.commands:
            self._load_all()
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


if __name__ == "__main__":
    app()

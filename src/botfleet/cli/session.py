"""The client a command runs with, and how its failures become messages and exit codes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from botfleet.cli import output
from botfleet.cli.api import ApiClient, ApiError, Unreachable
from botfleet.cli.config import ConfigError, Connection


@contextmanager
def connect(ctx: typer.Context, *, admin: bool = False) -> Iterator[ApiClient]:
    """An `ApiClient` from the root options; API errors end the command with their exit code."""
    connection = ctx.find_root().obj or Connection()
    try:
        url, token = connection.resolve(admin=admin)
    except ConfigError as exc:
        output.fail(str(exc), output.INPUT)
    if not token:
        what = (
            "an admin token (BOTFLEET_ADMIN_TOKEN or admin_token in the config file)"
            if admin
            else "an API key (--key, BOTFLEET_KEY or key in the config file)"
        )
        output.fail(f"no credentials: this command needs {what}", output.AUTH)
    try:
        with ApiClient(url, token) as client:
            yield client
    except ApiError as exc:
        output.fail(f"{exc.code}: {exc.message}", output.exit_code(exc.status))
    except Unreachable as exc:
        output.fail(
            f"cannot reach botfleet at {exc.url} ({exc.reason}); is the manager running? "
            "Point the CLI at it with --url or BOTFLEET_URL.",
            output.SERVER,
        )

"""`--wait`: polling a bot or a command until it got where the caller asked, and saying where
it ended (exit 1 when that is not where the caller wanted it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import typer

from botfleet.cli import output
from botfleet.cli.api import ApiClient

#: Where a bot ends.
TERMINAL = {"completed", "failed"}
#: Where a command ends.
ANSWERED = {"acked", "failed", "expired"}


def poll(
    fetch: Callable[[], dict[str, Any]],
    done: Callable[[dict[str, Any]], bool],
    timeout: float,
    what: str,
) -> dict[str, Any]:
    """Poll every half second until `done`; a timeout is a failure a script must notice."""
    deadline = time.monotonic() + timeout
    while not done(current := fetch()):
        if time.monotonic() > deadline:
            output.fail(f"timed out after {timeout:g}s waiting for {what}", output.FAILED)
        time.sleep(0.5)
    return current


def wait_for_bot(
    client: ApiClient, bot_id: str, statuses: set[str], timeout: float
) -> dict[str, Any]:
    return poll(
        lambda: client.get_bot(bot_id),
        lambda bot: bot["status"] in statuses,
        timeout,
        f"bot {bot_id} to become {' or '.join(sorted(statuses))}",
    )


def wait_for_answer(
    client: ApiClient, bot_id: str, command: dict[str, Any], timeout: float
) -> dict[str, Any]:
    return poll(
        lambda: client.get_command(bot_id, command["id"]),
        lambda c: c["status"] in ANSWERED,
        timeout,
        f"command {command['id']} to be acknowledged",
    )


def report_end(bot: dict[str, Any], as_json: bool, good: str) -> None:
    """Print where a waited-for bot ended; exit 1 unless it is where the caller wanted it."""
    if as_json:
        output.print_json(bot)
    else:
        reason = f" ({output.escape(bot['status_reason'])})" if bot.get("status_reason") else ""
        output.err.print(f"{bot['id']}: {output.styled(bot['status'])}{reason}")
    if bot["status"] != good:
        raise typer.Exit(output.FAILED)


def fail_unless_answered(command: dict[str, Any], *, silence: str) -> None:
    """Exit 1 for a command the bot refused or never answered (`silence`: what to say when
    the API gives no error)."""
    if command["status"] in {"failed", "expired"}:
        output.fail(
            f"command {command['status']}: {command.get('error') or silence}", output.FAILED
        )

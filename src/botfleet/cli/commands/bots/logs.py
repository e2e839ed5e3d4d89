"""`botfleet bots logs`: a bot's recent output, or its output as it is written (`-f`)."""

from __future__ import annotations

import typer

from botfleet.cli import output, targets
from botfleet.cli.commands.bots.inputs import BotId
from botfleet.cli.session import connect


def new_lines(previous: list[str], current: list[str]) -> list[str]:
    """The lines of `current` after its overlap with `previous` (both are tails of one log)."""
    for shift in range(len(previous) + 1):
        overlap = previous[shift:]
        if current[: len(overlap)] == overlap:
            return current[len(overlap) :]
    return current  # unreachable: shift == len(previous) always matches


def logs(
    ctx: typer.Context,
    bot_id: str = BotId,
    tail: int = typer.Option(
        200, "--tail", "-n", metavar="N", min=1, max=10_000, help="How many lines."
    ),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Stream new lines as the bot writes them."
    ),
) -> None:
    """A bot's recent output; with -f, keep printing new lines until the bot ends."""
    with connect(ctx) as client:
        bot_id = targets.resolve_or_fail(client, bot_id)
        if not follow:
            for line in client.logs(bot_id, tail=tail).splitlines():
                output.echo(line, multiline=True)
            return
        try:
            for line in client.follow_logs(bot_id, tail=tail):
                output.echo(line, multiline=True)
        except KeyboardInterrupt:
            return

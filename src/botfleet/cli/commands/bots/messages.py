"""`botfleet bots config|cmd|secrets`: what reaches a running bot as a command it answers."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from botfleet.cli import output, targets
from botfleet.cli.commands.bots.inputs import (
    BotId,
    JsonOpt,
    WaitTimeout,
    parse_pairs,
    read_json_object,
)
from botfleet.cli.commands.bots.waiting import fail_unless_answered, wait_for_answer
from botfleet.cli.session import connect


def reconfigure(
    ctx: typer.Context,
    bot_id: str = BotId,
    pairs: list[str] = typer.Argument(
        None, metavar="KEY=VALUE", help="Config keys (JSON when it parses; key=null removes one)."
    ),
    config_file: Path | None = typer.Option(
        None, "--file", "-f", metavar="FILE", help="The keys from a JSON file instead."
    ),
    replace: bool = typer.Option(
        False, "--replace", help="Send the whole config: keys not given are removed."
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait for the ack (exit 1 if refused)."),
    timeout: float = WaitTimeout,
    as_json: bool = JsonOpt,
) -> None:
    """Change a running bot's config; the bot acknowledges (or refuses) it.

    The keys given merge into the bot's config (a JSON Merge Patch: an object value merges
    into the key's object, `key=null` removes the key); with --replace they become the whole
    config.
    """
    if bool(config_file) == bool(pairs):
        output.invalid("give either --file FILE.json or key=value pairs")
    config = read_json_object(config_file) if config_file else parse_pairs(pairs, typed=True)
    with connect(ctx) as client:
        bot_id = targets.resolve_or_fail(client, bot_id)
        if replace:
            command = client.replace_config(bot_id, config)
        else:
            command = client.merge_config(bot_id, config)
        if wait:
            command = wait_for_answer(client, bot_id, command, timeout)
    if as_json:
        output.print_json(command)
    else:
        typer.echo(f"{command['id']} {command['status']}")
    fail_unless_answered(command, silence="no ack")


def send_command(
    ctx: typer.Context,
    bot_id: str = BotId,
    action: str = typer.Argument(..., metavar="ACTION", help="The command, e.g. echo."),
    pairs: list[str] = typer.Argument(
        None, metavar="KEY=VALUE", help="The payload's keys (JSON when it parses)."
    ),
    payload_file: Path | None = typer.Option(
        None, "--file", "-f", metavar="FILE", help="The payload from a JSON file instead."
    ),
    wait: bool = typer.Option(
        False, "--wait", help="Wait for the bot's answer and print its result (exit 1 if failed)."
    ),
    timeout: float = WaitTimeout,
    as_json: bool = JsonOpt,
) -> None:
    """Send a bot a custom command (its `on_command`); with --wait, print its JSON result.

    The demo bot answers `echo` (the payload back) and `sleep s=N`.
    """
    if payload_file and pairs:
        output.invalid("give either --file FILE.json or key=value pairs")
    payload = (
        read_json_object(payload_file) if payload_file else parse_pairs(pairs or [], typed=True)
    )
    with connect(ctx) as client:
        bot_id = targets.resolve_or_fail(client, bot_id)
        command = client.send_command(bot_id, action, payload)
        if wait:
            command = wait_for_answer(client, bot_id, command, timeout)
    if as_json:
        output.print_json(command)
    elif wait and command["status"] == "acked":
        typer.echo(output.json_safe(json.dumps(command.get("result"), indent=2)))
    else:
        typer.echo(f"{command['id']} {command['status']}")
    fail_unless_answered(command, silence="no answer")


def replace_secrets(
    ctx: typer.Context,
    bot_id: str = BotId,
    pairs: list[str] = typer.Argument(
        None,
        metavar="NAME=VALUE",
        help="The new secrets (plain strings). They land in your shell history: prefer --file.",
    ),
    secrets_file: Path | None = typer.Option(
        None, "--file", "-f", metavar="FILE", help="The new secrets from a JSON file."
    ),
    wait: bool = typer.Option(
        False, "--wait", help="Wait until the bot took them (exit 1 if not)."
    ),
    timeout: float = WaitTimeout,
    as_json: bool = JsonOpt,
) -> None:
    """Replace a running bot's secrets: the bot fetches them itself; they are never printed."""
    if bool(secrets_file) == bool(pairs):
        output.invalid("give either --file FILE.json or name=value pairs")
    secrets = read_json_object(secrets_file) if secrets_file else parse_pairs(pairs, typed=False)
    if not all(isinstance(v, str) for v in secrets.values()):
        output.invalid("every secret must be a string")
    with connect(ctx) as client:
        bot_id = targets.resolve_or_fail(client, bot_id)
        command = client.replace_secrets(bot_id, secrets)
        if wait:
            command = wait_for_answer(client, bot_id, command, timeout)
    if as_json:
        output.print_json(command)
    else:
        typer.echo(f"{command['id']} {command['status']}")
    fail_unless_answered(command, silence="no ack")

"""`botfleet bots reconfigure|command` (many bots, as one bulk operation) and `bots edit` (one
bot's name, labels, start time, duration, restart policy or priority: `PATCH /bots/{id}`).

`reconfigure` and `command` take ids or `--label` like `bots stop`: the bots are listed first
(a selector matching several asks, or needs --yes), then one operation acts on them all and its
progress shows until it is done (`--no-wait`: its id at once). `bots config ID` and `bots cmd ID`
remain the one-bot commands that wait for the bot's answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from botfleet.cli import output, targets
from botfleet.cli.commands.bots import batch, bulk
from botfleet.cli.commands.bots.inputs import (
    BotId,
    BotIds,
    JsonOpt,
    LabelSelector,
    Yes,
    parse_labels,
    parse_pairs,
    parse_value,
    read_json_object,
)
from botfleet.cli.session import connect

#: What a selector reconfigures or commands: the bots that accept commands.
ACCEPTING = ["starting", "active"]


def reconfigure(
    ctx: typer.Context,
    bot_ids: list[str] = BotIds,
    label: list[str] = LabelSelector,
    pairs: list[str] = typer.Option(
        [],
        "--set",
        "-c",
        metavar="KEY=VALUE",
        help="A config key to merge in (JSON when it parses; key=null removes it); repeatable.",
    ),
    config_file: Path | None = typer.Option(
        None, "--file", "-f", metavar="FILE", help="The keys from a JSON file (merged too)."
    ),
    yes: bool = Yes,
    no_wait: bool = bulk.NoWait,
    as_json: bool = JsonOpt,
) -> None:
    """Merge keys into many bots' configs at once (a JSON Merge Patch of each bot's config, as
    `bots config` does for one). With --label: every starting or active bot with those labels;
    a bot that cannot take it (not running, a config its kind refuses) fails alone."""
    patch: dict[str, Any] = read_json_object(config_file) if config_file else {}
    patch.update(parse_pairs(pairs, typed=True))
    if not patch:
        output.invalid("give the keys to merge: --set key=value (repeatable) or --file FILE")
    _in_one_operation(
        ctx, bot_ids, label, yes, no_wait, as_json,
        body={"action": "reconfigure", "config": patch},
        verb="reconfigured",
        line=lambda r: f"{r['bot_id']} config_version {r['result']['config_version']}",
    )  # fmt: skip


def command(
    ctx: typer.Context,
    action: str = typer.Argument(..., metavar="ACTION", help="The bot's command, e.g. echo."),
    bot_ids: list[str] = BotIds,
    label: list[str] = LabelSelector,
    payload: str = typer.Option(
        "{}", "--payload", "-p", metavar="JSON", help="The command's payload, a JSON object."
    ),
    yes: bool = Yes,
    no_wait: bool = bulk.NoWait,
    as_json: bool = JsonOpt,
) -> None:
    """Send many bots the same custom command at once (`bots cmd` sends one bot one and waits
    for its answer). With --label: every starting or active bot with those labels. Each bot's
    line names its command; its answer comes later (GET /bots/{id}/commands/{command id})."""
    body = parse_value(payload)
    if not isinstance(body, dict):
        output.invalid('--payload must be a JSON object, like \'{"text": "hi"}\'')
    _in_one_operation(
        ctx, bot_ids, label, yes, no_wait, as_json,
        body={"action": "command", "command": {"action": action, "payload": body}},
        verb="commanded",
        line=lambda r: f"{r['bot_id']} command {r['result']['command_id']}",
    )  # fmt: skip


def _in_one_operation(
    ctx: typer.Context,
    bot_ids: list[str] | None,
    label: list[str],
    yes: bool,
    no_wait: bool,
    as_json: bool,
    *,
    body: dict[str, Any],
    verb: str,
    line: Any,
) -> None:
    labels = parse_labels(label)
    with connect(ctx) as client:
        asked = batch._choose(client, bot_ids, labels, ACCEPTING, body["action"], yes)
        ids = batch._ids(asked)
        if not ids and not any(o.error for o in asked):
            return  # the selector matched nothing: said so already
        operation = None
        if ids:
            body = {**body, "selector": bulk.selector(ids, labels, ACCEPTING)}
            operation = bulk.start(client, body, no_wait=no_wait)
            if no_wait:
                return
        if operation is None:  # every id typed named no bot
            batch._summary(asked, verb)
            return
        batch._bulk_report(client, operation, asked, as_json, verb, line=line)


def edit(
    ctx: typer.Context,
    bot_id: str = BotId,
    name: str | None = typer.Option(None, "--name", metavar="NAME", help="A new name."),
    label: list[str] = typer.Option(
        [], "--label", "-l", metavar="KEY:VALUE", help="Set this label; repeatable."
    ),
    unlabel: list[str] = typer.Option(
        [], "--remove-label", metavar="KEY", help="Remove this label; repeatable."
    ),
    start_at: str | None = typer.Option(
        None,
        "--start-at",
        metavar="TIME",
        help="Start at this ISO time with a zone, or `now` (a bot not launched yet).",
    ),
    max_duration: int | None = typer.Option(
        None, "--max-duration", metavar="SECONDS", min=0, help="Stop it after this long; 0: never."
    ),
    priority: int | None = typer.Option(
        None, "--priority", metavar="N", help="Its place in the queue (higher first)."
    ),
    restart_retries: int | None = typer.Option(
        None, "--restart-retries", metavar="N", min=0, help="Relaunches after a failure."
    ),
    restart_backoff: float | None = typer.Option(
        None, "--restart-backoff", metavar="SECONDS", min=0, help="Wait before a relaunch."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Change a bot's name, labels, start time, duration limit, restart policy or priority, as
    far as its state allows (a bot that started keeps its start time: exit 4). Every edit is
    kept with who made it (GET /bots/{id}/edits)."""
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = name
    labels: dict[str, str | None] = {key: None for key in unlabel}
    labels.update(dict(parse_labels(label)))
    if labels:
        changes["labels"] = labels
    if start_at is not None:
        changes["start_at"] = None if start_at.strip().lower() == "now" else start_at
    if max_duration is not None:
        changes["max_duration_s"] = max_duration or None
    if priority is not None:
        changes["priority"] = priority
    restart = {"max_retries": restart_retries, "backoff_s": restart_backoff}
    if any(v is not None for v in restart.values()):
        changes["restart"] = {k: v for k, v in restart.items() if v is not None}
    if not changes:
        output.invalid("nothing to change: give --name, --label, --start-at, --max-duration, …")
    with connect(ctx) as client:
        bot_id = targets.resolve_or_fail(client, bot_id)
        bot = client.edit_bot(bot_id, changes)
    if as_json:
        output.print_json(bot)
        return
    shown = ["id", "name", "status", "labels", "start_at", "max_duration_s", "restart"]
    output.console.print(output.fields_table(bot, shown + ["priority"] * ("priority" in bot)))

"""`botfleet bots ls|start|show|relaunch`: a bot's life (`batch`: stop and rm)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from botfleet.cli import output, targets
from botfleet.cli.api import ApiClient
from botfleet.cli.commands.bots.inputs import (
    BotId,
    IdempotencyKey,
    JsonOpt,
    WaitActive,
    WaitTimeout,
    parse_json_option,
    parse_labels,
    parse_pairs,
    read_json_object,
)
from botfleet.cli.commands.bots.waiting import TERMINAL, report_end, wait_for_bot
from botfleet.cli.session import connect

SHOW_FIELDS = [
    "id", "name", "bot", "status", "status_reason", "exit_code", "attempt", "orchestrator",
    "runtime_ref", "image", "platform", "native_id", "config", "config_version", "labels",
    "dedup_key", "start_at", "max_duration_s", "created_at", "started_at", "active_at",
    "ended_at", "report", "reported_at", "restart", "state_key", "relaunch_of",
    "priority", "queue_timeout_s", "queued_at", "queue_position", "resources", "placement",
]  # fmt: skip


def list_bots(
    ctx: typer.Context,
    status: list[str] = typer.Option(
        [], "--status", "-s", metavar="STATUS", help="Only this status; repeatable."
    ),
    label: list[str] = typer.Option(
        [], "--label", "-l", metavar="KEY:VALUE", help="Only bots with this label; repeatable."
    ),
    limit: int | None = typer.Option(
        None, "--limit", "-n", metavar="N", min=1, max=1000, help="Page size."
    ),
    all_pages: bool = typer.Option(False, "--all", "-a", help="Follow cursors to the end."),
    all_users: bool = typer.Option(
        False, "--all-users", help="Every user's bots (the admin token's fleet view)."
    ),
    user_id: str | None = typer.Option(
        None, "--user", metavar="USER_ID", help="With --all-users: only this user's bots."
    ),
    watch: bool = typer.Option(False, "--watch", "-w", help="Redraw until Ctrl-C."),
    interval: float = typer.Option(
        2.0, "--interval", metavar="SECONDS", min=0.2, help="Seconds between redraws."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """List your bots, newest first; with --all-users, every user's (admin token)."""
    if watch and as_json:
        output.invalid("--watch and --json do not mix")
    if user_id and not all_users:
        output.invalid("--user needs --all-users (the admin token)")
    labels = parse_labels(label)
    with connect(ctx, admin=all_users) as client:

        def fetch() -> dict[str, Any]:
            if not all_pages:
                return client.list_bots(status=status, labels=labels, limit=limit, user_id=user_id)
            pages = client.iter_pages(status=status, labels=labels, limit=limit, user_id=user_id)
            return {"items": [bot for page in pages for bot in page["items"]], "next_cursor": None}

        if as_json:
            output.print_json(fetch())
            return
        if not watch:
            page = fetch()
            output.console.print(output.bots_table(page["items"]))
            if page.get("next_cursor"):
                output.err.print("[dim]more bots: --all to list every page[/]")
            return

        from rich.console import Group
        from rich.live import Live
        from rich.text import Text

        def frame() -> Group:
            page = fetch()
            stamp = Text(
                f"every {interval:g}s · {time.strftime('%H:%M:%S')} · Ctrl-C to quit", style="dim"
            )
            return Group(output.bots_table(page["items"]), stamp)

        try:
            with Live(frame(), console=output.console, auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(frame(), refresh=True)
        except KeyboardInterrupt:
            return


def start(
    ctx: typer.Context,
    bot: str = typer.Argument(
        ..., metavar="BOT", help="A built-in bot (`demo`) or `module:Class`."
    ),
    name: str | None = typer.Option(None, "--name", metavar="NAME", help="A name to show."),
    config_file: Path | None = typer.Option(
        None, "--config", metavar="FILE", help="Config from a JSON file."
    ),
    config: list[str] = typer.Option(
        [],
        "-c",
        "--set",
        metavar="KEY=VALUE",
        help="A config key; repeatable (JSON when it parses).",
    ),
    secret: list[str] = typer.Option(
        [], "--secret", metavar="KEY=VALUE", help="Kept sealed; repeatable."
    ),
    label: list[str] = typer.Option(
        [], "--label", "-l", metavar="KEY:VALUE", help="A label; repeatable."
    ),
    image: str | None = typer.Option(None, "--image", metavar="IMAGE", help="Runtime image."),
    start_at: str | None = typer.Option(
        None, "--start-at", metavar="TIME", help="Start later: ISO time with a zone."
    ),
    max_duration: int | None = typer.Option(
        None, "--max-duration", metavar="SECONDS", help="Stop the bot after this long."
    ),
    restart_retries: int | None = typer.Option(
        None, "--restart-retries", metavar="N", min=0, help="Relaunches after a failure."
    ),
    restart_backoff: float | None = typer.Option(
        None, "--restart-backoff", metavar="SECONDS", min=0, help="Wait before a relaunch."
    ),
    restart_on: list[str] = typer.Option(
        [],
        "--restart-on",
        metavar="TRIGGER",
        help="Retry this failure: crash, heartbeat_lost, start_failed; repeatable.",
    ),
    dedup_key: str | None = typer.Option(
        None, "--dedup-key", metavar="KEY", help="Refuse a second live bot with this key."
    ),
    state_key: str | None = typer.Option(
        None,
        "--state-key",
        metavar="KEY",
        help="A persistent directory kept across restarts and relaunches with this key.",
    ),
    queue: bool | None = typer.Option(
        None, "--queue/--no-queue", help="Over a limit, wait queued instead of failing (429)."
    ),
    priority: int | None = typer.Option(
        None, "--priority", metavar="N", help="Queue priority, higher first (-1000..1000)."
    ),
    queue_timeout: float | None = typer.Option(
        None, "--queue-timeout", metavar="SECONDS", help="Fail if still queued after this long."
    ),
    health: list[str] = typer.Option(
        [],
        "--health",
        metavar="RULE",
        help='A health rule as JSON, e.g. \'{"when": {"no_report_for_s": 60}, "then": "restart"}\''
        "; repeatable (docs/how-to/health-rules.md).",
    ),
    cpu: float | None = typer.Option(
        None,
        "--cpu",
        metavar="CPUS",
        min=0.01,
        help="CPUs for the bot, e.g. 0.5 (its kind's else).",
    ),
    memory: int | None = typer.Option(
        None, "--memory", metavar="MIB", min=1, help="Memory for the bot, in MiB."
    ),
    constraint: list[str] = typer.Option(
        [],
        "--constraint",
        metavar="EXPR",
        help="Where it may run, in the backend's words (swarm: node.labels.zone==a; nomad: "
        "'${meta.zone} = a'); repeatable.",
    ),
    node_label: list[str] = typer.Option(
        [], "--node-label", metavar="KEY=VALUE", help="A label its node must carry; repeatable."
    ),
    datacenter: list[str] = typer.Option(
        [], "--datacenter", metavar="DC", help="Nomad: a datacenter it may run in; repeatable."
    ),
    idempotency_key: str | None = IdempotencyKey,
    wait: bool = WaitActive,
    timeout: float = WaitTimeout,
    as_json: bool = JsonOpt,
) -> None:
    """Start a bot and print its id."""
    body: dict[str, Any] = {"bot": bot, "config": {}}
    if config_file:
        body["config"] = read_json_object(config_file)
    body["config"].update(parse_pairs(config, typed=True))
    optional = {
        "name": name,
        "image": image,
        "start_at": start_at,
        "max_duration_s": max_duration,
        "dedup_key": dedup_key,
        "state_key": state_key,
        "queue": queue,
        "priority": priority,
        "queue_timeout_s": queue_timeout,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if secret:
        body["secrets"] = parse_pairs(secret, typed=False)
    if label:
        body["labels"] = dict(parse_labels(label))
    if restart_retries is not None or restart_backoff is not None or restart_on:
        policy = {"max_retries": restart_retries, "backoff_s": restart_backoff}
        body["restart"] = {k: v for k, v in policy.items() if v is not None}
        if restart_on:
            body["restart"]["on"] = restart_on
    if health:
        body["health"] = [parse_json_option(rule, "--health") for rule in health]
    resources = {"cpu": cpu, "memory_mb": memory}
    if cpu is not None or memory is not None:
        body["resources"] = {k: v for k, v in resources.items() if v is not None}
    placement = {
        "constraints": constraint,
        "node_labels": parse_pairs(node_label, typed=False),
        "datacenters": datacenter,
    }
    if any(placement.values()):
        body["placement"] = {k: v for k, v in placement.items() if v}
    with connect(ctx) as client:
        created = client.start_bot(body, idempotency_key=idempotency_key)
        _announce_new_bot(client, created, wait=wait, timeout=timeout, as_json=as_json)


def _announce_new_bot(
    client: ApiClient, created: dict[str, Any], *, wait: bool, timeout: float, as_json: bool
) -> None:
    """Print a new bot's id (or JSON); with `wait`, follow it until active (exit 1 if it
    fails) — shared by `start` and `relaunch`."""
    if not wait:
        output.print_json(created) if as_json else typer.echo(created["id"])
        return
    if not as_json:
        typer.echo(created["id"])
    bot_state = wait_for_bot(client, created["id"], {"active"} | TERMINAL, timeout)
    report_end(bot_state, as_json, "active")


def show(ctx: typer.Context, bot_id: str = BotId, as_json: bool = JsonOpt) -> None:
    """A bot's fields and its lifecycle history (JSON: the bot plus `transitions`)."""
    with connect(ctx) as client:
        bot_id, listed = targets.find_or_fail(client, bot_id)
        bot = listed or client.get_bot(bot_id)
        rows = client.transitions(bot_id)
    if as_json:
        output.print_json({**bot, "transitions": rows})
        return
    output.console.print(output.fields_table(bot, SHOW_FIELDS))
    output.console.print()
    output.console.print(output.transitions_table(rows, width=output.console.width))


def relaunch(
    ctx: typer.Context,
    bot_id: str = BotId,
    idempotency_key: str | None = IdempotencyKey,
    wait: bool = WaitActive,
    timeout: float = WaitTimeout,
    as_json: bool = JsonOpt,
) -> None:
    """Start an ended bot again as a new bot (same kind, config, secrets, labels, restart
    policy, state); print the new id. A live bot: stop it first (exit 4)."""
    with connect(ctx) as client:
        bot_id = targets.resolve_or_fail(client, bot_id)
        created = client.relaunch_bot(bot_id, idempotency_key=idempotency_key)
        _announce_new_bot(client, created, wait=wait, timeout=timeout, as_json=as_json)

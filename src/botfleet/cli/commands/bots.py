"""`botfleet bots …`: start, list, show, reconfigure, stop and tail bots."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Group
from rich.live import Live
from rich.text import Text

from botfleet.cli import help_format, output
from botfleet.cli.api import ApiClient
from botfleet.cli.session import connect

app = help_format.Typer(
    help="Start, list, inspect, reconfigure and stop bots.", no_args_is_help=True
)

TERMINAL = {"completed", "failed"}
SHOW_FIELDS = [
    "id", "name", "bot", "status", "status_reason", "exit_code", "attempt", "orchestrator",
    "runtime_ref", "image", "platform", "native_id", "config", "config_version", "labels",
    "dedup_key", "start_at", "max_duration_s", "created_at", "started_at", "active_at",
    "ended_at", "report", "reported_at", "restart", "state_key", "relaunch_of",
]  # fmt: skip

JsonOpt = typer.Option(False, "--json", help="Print the API's JSON document, nothing else.")
WaitTimeout = typer.Option(
    120.0, "--timeout", metavar="SECONDS", help="Seconds --wait waits at most."
)
BotId = typer.Argument(..., metavar="ID", help="The bot's id.")


# ---- input parsing ---------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """JSON when it parses (`3`, `true`, `{"a": 1}`), else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_pairs(pairs: list[str], *, typed: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for pair in pairs:
        key, found, value = pair.partition("=")
        if not found or not key:
            output.invalid(f"expected key=value, got {pair!r}")
        result[key] = parse_value(value) if typed else value
    return result


def parse_labels(pairs: list[str]) -> list[tuple[str, str]]:
    """`--label key=value`, the one syntax of every --label (the API's `?label=` filter says
    `key:value`; the client translates). The other syntax gets a hint, never a guess."""
    labels = []
    for pair in pairs:
        key, found, value = pair.partition("=")
        if not found:
            old_key, colon, old_value = pair.partition(":")
            if colon and old_key:
                output.invalid(f"use --label {old_key}={old_value} (key=value)")
        if not found or not key:
            output.invalid(f"expected --label key=value, got {pair!r}")
        if ":" in key:
            output.invalid(f"a label key has no ':' (got {key!r}); use --label key=value")
        labels.append((key, value))
    return labels


def read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        output.invalid(f"cannot read {path}: {exc}")
    if not isinstance(data, dict):
        output.invalid(f"{path} must hold a JSON object")
    return data


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


def wait_for_bot(client: ApiClient, bot_id: str, statuses: set[str], timeout: float) -> dict:
    return poll(
        lambda: client.get_bot(bot_id),
        lambda bot: bot["status"] in statuses,
        timeout,
        f"bot {bot_id} to become {' or '.join(sorted(statuses))}",
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


# ---- commands --------------------------------------------------------------------------------


@app.command("ls")
def list_bots(
    ctx: typer.Context,
    status: list[str] = typer.Option(
        [], "--status", "-s", metavar="STATUS", help="Only this status; repeatable."
    ),
    label: list[str] = typer.Option(
        [], "--label", "-l", metavar="KEY=VALUE", help="Only bots with this label; repeatable."
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
    filters = {"status": status, "labels": parse_labels(label), "limit": limit, "user_id": user_id}
    with connect(ctx, admin=all_users) as client:

        def fetch() -> dict[str, Any]:
            if not all_pages:
                return client.list_bots(**filters)
            items = [bot for page in client.iter_pages(**filters) for bot in page["items"]]
            return {"items": items, "next_cursor": None}

        if as_json:
            output.print_json(fetch())
            return
        if not watch:
            page = fetch()
            output.console.print(output.bots_table(page["items"]))
            if page.get("next_cursor"):
                output.err.print("[dim]more bots: --all to list every page[/]")
            return

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


@app.command("start")
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
        [], "--label", "-l", metavar="KEY=VALUE", help="A label; repeatable."
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
    idempotency_key: str | None = typer.Option(
        None, "--idempotency-key", metavar="KEY", help="Retry safely: the same answer again."
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait until active (exit 1 if it fails)."),
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


@app.command("show")
def show(ctx: typer.Context, bot_id: str = BotId, as_json: bool = JsonOpt) -> None:
    """A bot's fields and its lifecycle history (JSON: the bot plus `transitions`)."""
    with connect(ctx) as client:
        bot = client.get_bot(bot_id)
        rows = client.transitions(bot_id)
    if as_json:
        output.print_json({**bot, "transitions": rows})
        return
    output.console.print(output.fields_table(bot, SHOW_FIELDS))
    output.console.print()
    output.console.print(output.transitions_table(rows, width=output.console.width))


@app.command("stop")
def stop(
    ctx: typer.Context,
    bot_id: str = BotId,
    wait: bool = typer.Option(False, "--wait", help="Wait until it ended (exit 1 if failed)."),
    timeout: float = WaitTimeout,
    as_json: bool = JsonOpt,
) -> None:
    """Ask a bot to leave; idempotent on a stopping or ended bot."""
    with connect(ctx) as client:
        bot = client.stop_bot(bot_id)
        if wait:
            bot = wait_for_bot(client, bot["id"], TERMINAL, timeout)
            report_end(bot, as_json, "completed")
        elif as_json:
            output.print_json(bot)
        else:
            typer.echo(f"{bot['id']} {bot['status']}")


@app.command("relaunch")
def relaunch(
    ctx: typer.Context,
    bot_id: str = BotId,
    idempotency_key: str | None = typer.Option(
        None, "--idempotency-key", metavar="KEY", help="Retry safely: the same answer again."
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait until active (exit 1 if it fails)."),
    timeout: float = WaitTimeout,
    as_json: bool = JsonOpt,
) -> None:
    """Start an ended bot again as a new bot (same kind, config, secrets, labels, restart
    policy, state); print the new id. A live bot: stop it first (exit 4)."""
    with connect(ctx) as client:
        created = client.relaunch_bot(bot_id, idempotency_key=idempotency_key)
        _announce_new_bot(client, created, wait=wait, timeout=timeout, as_json=as_json)


@app.command("rm")
def remove(
    ctx: typer.Context,
    bot_id: str = BotId,
    purge_state: bool = typer.Option(
        False, "--purge-state", help="Also delete its state directory (its --state-key)."
    ),
) -> None:
    """Delete an ended bot with its history and logs (a live bot: stop it first, exit 4)."""
    with connect(ctx) as client:
        client.delete_bot(bot_id, purge_state=purge_state)
    typer.echo(f"{bot_id} deleted")


@app.command("config")
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
        if replace:
            command = client.replace_config(bot_id, config)
        else:
            command = client.merge_config(bot_id, config)
        if wait:
            command = poll(
                lambda: client.get_command(bot_id, command["id"]),
                lambda c: c["status"] in {"acked", "failed", "expired"},
                timeout,
                f"command {command['id']} to be acknowledged",
            )
    if as_json:
        output.print_json(command)
    else:
        typer.echo(f"{command['id']} {command['status']}")
    if command["status"] in {"failed", "expired"}:
        output.fail(
            f"command {command['status']}: {command.get('error') or 'no ack'}", output.FAILED
        )


def wait_for_answer(client: ApiClient, bot_id: str, command: dict, timeout: float) -> dict:
    return poll(
        lambda: client.get_command(bot_id, command["id"]),
        lambda c: c["status"] in {"acked", "failed", "expired"},
        timeout,
        f"command {command['id']} to be acknowledged",
    )


@app.command("cmd")
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
        command = client.send_command(bot_id, action, payload)
        if wait:
            command = wait_for_answer(client, bot_id, command, timeout)
    if as_json:
        output.print_json(command)
    elif wait and command["status"] == "acked":
        typer.echo(json.dumps(command.get("result"), indent=2))
    else:
        typer.echo(f"{command['id']} {command['status']}")
    if command["status"] in {"failed", "expired"}:
        output.fail(
            f"command {command['status']}: {command.get('error') or 'no answer'}", output.FAILED
        )


@app.command("secrets")
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
        command = client.replace_secrets(bot_id, secrets)
        if wait:
            command = wait_for_answer(client, bot_id, command, timeout)
    if as_json:
        output.print_json(command)
    else:
        typer.echo(f"{command['id']} {command['status']}")
    if command["status"] in {"failed", "expired"}:
        output.fail(
            f"command {command['status']}: {command.get('error') or 'no ack'}", output.FAILED
        )


def new_lines(previous: list[str], current: list[str]) -> list[str]:
    """The lines of `current` after its overlap with `previous` (both are tails of one log)."""
    for shift in range(len(previous) + 1):
        overlap = previous[shift:]
        if current[: len(overlap)] == overlap:
            return current[len(overlap) :]
    return current  # unreachable: shift == len(previous) always matches


@app.command("logs")
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
        if not follow:
            for line in client.logs(bot_id, tail=tail).splitlines():
                typer.echo(line)
            return
        try:
            for line in client.follow_logs(bot_id, tail=tail):
                typer.echo(line)
        except KeyboardInterrupt:
            return

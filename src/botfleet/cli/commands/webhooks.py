"""`botfleet webhooks …`: your webhook endpoints (`add`, `ls`, `show`, `rm`), their deliveries,
and a test event to any of them (`test`)."""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.table import Table

from botfleet.cli import help_format, output
from botfleet.cli.api import ApiClient
from botfleet.cli.commands.bots.inputs import parse_labels
from botfleet.cli.session import connect
from botfleet.cli.targets import resolve_or_fail

app = help_format.Typer(
    help="Your webhook endpoints: add, list, show and remove them, read their deliveries, send "
    "one a test event.",
    no_args_is_help=True,
)
POLL_S = 0.25  # how often a waiting `test` reads its delivery
JsonOpt = typer.Option(False, "--json", help="Print the API's JSON, nothing else.")
EndpointArg = typer.Argument(..., metavar="ENDPOINT", help="The endpoint's id (`webhooks ls`).")


# The webhook requests, kept beside their commands (api.py is at the modules' size limit).
def get_endpoint(client: ApiClient, bot_id: str | None) -> Any:
    """The user's default endpoint, or the bot's own."""
    return client._json("GET", f"/bots/{bot_id}/webhook" if bot_id else "/webhook")


def send_test_event(client: ApiClient, endpoint_id: str) -> Any:
    """Queue a `webhook.test` event to the endpoint: the delivery it makes."""
    return client._json("POST", f"/webhooks/{endpoint_id}/test")


def get_delivery(client: ApiClient, delivery_id: str) -> Any:
    return client._json("GET", f"/webhook/deliveries/{delivery_id}")


def wait_for_attempt(client: ApiClient, delivery: dict[str, Any], timeout_s: float) -> Any:
    """The delivery once its attempt is recorded (no longer `pending`), or as it is when
    `timeout_s` runs out."""
    deadline = time.monotonic() + timeout_s
    while delivery["status"] == "pending" and time.monotonic() < deadline:
        time.sleep(POLL_S)
        delivery = get_delivery(client, delivery["id"])
    return delivery


def describe_attempt(delivery: dict[str, Any], url: str) -> str:
    """One line: where the test went and what the receiver answered, as Rich markup."""
    attempts = delivery.get("attempts") or []
    last = attempts[-1] if attempts else {}
    answer = f"HTTP {last['status_code']}" if last.get("status_code") is not None else "no answer"
    took = f" in {last['duration_ms']} ms" if last else ""
    where = f"{output.escape(delivery['webhook_id'])} to {output.escape(url)}"
    if delivery["status"] == "delivered":
        return f"[green]delivered[/] {where}: {answer}{took}"
    if delivery["status"] == "failed":
        return f"[red]failed[/] {where}: {output.escape(last.get('error') or answer)}{took}"
    return f"[yellow]pending[/] {where}: not attempted yet"


def parse_headers(lines: list[str]) -> dict[str, str]:
    """`--header 'Name: value'`, as curl takes it."""
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            output.invalid("expected --header 'Name: value': a name, then ':', then the value")
        headers[name.strip()] = value.strip()
    return headers


def what_it_gets(endpoint: dict[str, Any]) -> tuple[str, str]:
    """(events, labels) in words: every type, every bot, or the filters."""
    events = ",".join(endpoint.get("events") or []) or "every type"
    labels = endpoint.get("labels") or {}
    return events, "  ".join(f"{k}:{v}" for k, v in labels.items()) or "every bot"


def state_of(endpoint: dict[str, Any]) -> str:
    if not endpoint.get("enabled", True):
        return "disabled"
    if endpoint.get("breaker") == "open":
        return f"paused until {output.clock(endpoint.get('paused_until'))}"
    return "probing" if endpoint.get("breaker") == "half_open" else "on"


def endpoints_table(endpoints: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "FOR", "URL", "EVENTS", "LABELS", "HEADERS", "STATE"):
        table.add_column(column, no_wrap=column == "ID")
    for endpoint in endpoints:
        events, labels = what_it_gets(endpoint)
        if endpoint.get("bot_id"):
            target = f"bot {output.short(endpoint['bot_id'])}"
        else:
            target = endpoint.get("name") or (
                "subscription" if endpoint.get("subscription") else "default"
            )
        table.add_row(
            output.plain(endpoint["id"]),
            output.plain(target),
            output.plain(endpoint["url"]),
            output.plain(events),
            output.plain(labels),
            output.plain(",".join(endpoint.get("header_names") or [])),
            output.plain(state_of(endpoint)),
        )
    return table


@app.command("add")
def add(
    ctx: typer.Context,
    url: str = typer.Argument(..., metavar="URL", help="The http(s) URL that receives the POSTs."),
    event: list[str] = typer.Option(
        [],
        "--event",
        metavar="TYPE",
        help="An event type to send (repeat): bot.transition, bot.transition.<status>, "
        "bot.report, command.result, bot.queued, schedule.fired. None: every type.",
    ),
    label: list[str] = typer.Option(
        [], "--label", metavar="KEY:VALUE", help="Only bots with this label (repeat: all of them)."
    ),
    header: list[str] = typer.Option(
        [], "--header", metavar="'NAME: VALUE'", help="A custom header sent with every request."
    ),
    name: str | None = typer.Option(None, "--name", help="A name to recognise it by."),
    as_json: bool = JsonOpt,
) -> None:
    """Add an endpoint; prints its signing secret, shown this once."""
    body: dict[str, Any] = {"url": url}
    if event:
        body["events"] = event
    if label:
        body["labels"] = dict(parse_labels(label))
    if header:
        body["headers"] = parse_headers(header)
    if name:
        body["name"] = name
    with connect(ctx) as client:
        endpoint = client._json("POST", "/webhooks", json=body)
    if as_json:
        output.print_json(endpoint)
        return
    events, labels = what_it_gets(endpoint)
    typer.echo(f"endpoint {endpoint['id']} added: {events}; {labels}")
    typer.echo(f"signing secret (shown this once): {endpoint['secret']}")


@app.command("ls")
def list_endpoints(ctx: typer.Context, as_json: bool = JsonOpt) -> None:
    """Every endpoint of yours: the default one, bots' own and the ones `add` made."""
    with connect(ctx) as client:
        endpoints = client._all("/webhooks")
    if as_json:
        output.print_json(endpoints)
    else:
        output.console.print(endpoints_table(endpoints))


@app.command("show")
def show(ctx: typer.Context, endpoint_id: str = EndpointArg) -> None:
    """One endpoint as JSON: its filters, custom header names and breaker."""
    with connect(ctx) as client:
        output.print_json(client._json("GET", f"/webhooks/{endpoint_id}"))


@app.command("rm")
def remove(ctx: typer.Context, endpoint_id: str = EndpointArg) -> None:
    """Remove an endpoint, with its deliveries."""
    with connect(ctx) as client:
        client._request("DELETE", f"/webhooks/{endpoint_id}")
    typer.echo(f"endpoint {endpoint_id} removed")


@app.command("deliveries")
def deliveries(
    ctx: typer.Context,
    endpoint_id: str = EndpointArg,
    status: str | None = typer.Option(
        None, "--status", metavar="STATUS", help="pending, delivered or failed only."
    ),
    limit: int = typer.Option(20, "--limit", min=1, max=1000, help="How many, newest first."),
    as_json: bool = JsonOpt,
) -> None:
    """The endpoint's latest deliveries, newest event first, with the receiver's last answer."""
    params: list[tuple[str, str | int]] = [("limit", limit)]
    if status:
        params.append(("status", status))
    with connect(ctx) as client:
        page = client._json("GET", f"/webhooks/{endpoint_id}/deliveries", params=params)
    if as_json:
        output.print_json(page["items"])
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "TYPE", "EVENT", "BOT", "STATUS", "ATTEMPTS", "LAST ANSWER"):
        table.add_column(column, no_wrap=column in {"ID", "EVENT"})
    for delivery in page["items"]:
        last = (delivery.get("attempts") or [{}])[-1]
        answer = last.get("status_code") or last.get("error") or ""
        table.add_row(
            output.plain(delivery["id"]),
            output.plain(delivery["payload"].get("type", "")),
            output.plain(delivery["webhook_id"]),
            output.plain(output.short(delivery.get("bot_id"))),
            output.plain(delivery["status"]),
            str(delivery["attempt_count"]),
            output.plain(answer),
        )
    output.console.print(table)


@app.command("test")
def test(
    ctx: typer.Context,
    endpoint_id: str | None = typer.Argument(
        None, metavar="[ENDPOINT]", help="An endpoint's id (`webhooks ls`); default: your default."
    ),
    bot: str | None = typer.Option(
        None,
        "--bot",
        metavar="BOT",
        help="The bot's own endpoint (its override) instead of your default one.",
    ),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Wait for the attempt and show the receiver's answer."
    ),
    timeout: float = typer.Option(
        30.0, "--timeout", metavar="SECONDS", min=0, help="How long --wait waits."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the delivery's JSON, nothing else."),
) -> None:
    """Send a test event (type `webhook.test`) to an endpoint now, signed and recorded like
    every delivery, and show the receiver's answer; exits 1 unless it was 2xx."""
    with connect(ctx) as client:
        if endpoint_id is not None:
            endpoint = client._json("GET", f"/webhooks/{endpoint_id}")
        else:
            bot_id = resolve_or_fail(client, bot) if bot else None
            endpoint = get_endpoint(client, bot_id)
        delivery = send_test_event(client, endpoint["id"])
        if wait:
            delivery = wait_for_attempt(client, delivery, timeout)
    if as_json:
        output.print_json(delivery)
    else:
        output.console.print(describe_attempt(delivery, endpoint["url"]), soft_wrap=True)
        if delivery["status"] == "pending" and wait:
            output.err.print(
                f"no attempt within {timeout:g}s: is the manager's webhook sender running, or "
                "the endpoint paused (`botfleet webhooks show` shows `paused_until`)?",
                soft_wrap=True,
            )
    if wait and delivery["status"] != "delivered":
        raise typer.Exit(output.FAILED)

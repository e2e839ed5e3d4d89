"""`botfleet webhooks …`: try the user's webhook endpoint (`test`: send a test event now)."""

from __future__ import annotations

import time
from typing import Any

import typer

from botfleet.cli import help_format, output
from botfleet.cli.api import ApiClient
from botfleet.cli.session import connect
from botfleet.cli.targets import resolve_or_fail

app = help_format.Typer(
    help="Your webhook endpoint: send it a test event.",
    no_args_is_help=True,
)
POLL_S = 0.25  # how often a waiting `test` reads its delivery


# The webhook requests, kept beside their command (api.py is at the modules' size limit).
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


@app.command("test")
def test(
    ctx: typer.Context,
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
    """Send a test event (type `webhook.test`) to your webhook endpoint now, signed and
    recorded like every delivery, and show the receiver's answer; exits 1 unless it was 2xx."""
    with connect(ctx) as client:
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
                "the endpoint paused (GET /webhook shows `paused_until`)?",
                soft_wrap=True,
            )
    if wait and delivery["status"] != "delivered":
        raise typer.Exit(output.FAILED)

"""Commands on many bots as one bulk operation (`POST /bots/actions`): one call however many
bots, then the operation's progress until it is done (or its id at once, `--no-wait`), then a
line per bot from its results. `bots stop|rm` use it past BULK_FROM bots; `bots reconfigure`
and `bots command` always do. `botfleet operations …` reads an operation again later."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import typer

from botfleet.cli import output
from botfleet.cli.api import ApiClient

#: More bots than this (ids or a selector's matches): one operation instead of a call each.
BULK_FROM = 5
#: Ids one operation may name (the API's limit); a larger selection goes by its labels.
MAX_IDS = 1000
POLL_S = 0.3

NoWait = typer.Option(
    False, "--no-wait", help="Print the operation's id and return (botfleet operations show ID)."
)


def selector(
    bot_ids: list[str], labels: list[tuple[str, str]], statuses: list[str]
) -> dict[str, Any]:
    """The bots as the API selects them: their ids, or (more than MAX_IDS) the labels and
    statuses that listed them."""
    if bot_ids and len(bot_ids) <= MAX_IDS:
        return {"ids": bot_ids}
    return {"labels": dict(labels), "status": statuses}


def progress_line(operation: dict[str, Any]) -> str:
    done, failed, total = operation["done"], operation["failed"], operation["total"]
    return (
        f"{operation['action']}: {done + failed} of {total} bots ({done} done, {failed} failed)"
        f" · {operation['status']}"
    )


@contextmanager
def _shown_at_terminal(text: str) -> Iterator[Any]:
    """A line on stderr that updates itself at a terminal; nothing elsewhere (scripts)."""
    if not output.err.is_terminal:
        yield None
        return
    with output.err.status(text) as status:
        yield status


def follow(client: ApiClient, operation: dict[str, Any]) -> dict[str, Any]:
    """Poll the operation until it is no longer running, its progress shown at a terminal.
    Ctrl-C stops watching, not the operation."""
    try:
        with _shown_at_terminal(progress_line(operation)) as status:
            while operation["status"] == "running":
                time.sleep(POLL_S)
                operation = client.get_operation(operation["id"])
                if status is not None:
                    status.update(progress_line(operation))
    except KeyboardInterrupt:
        output.err.print(
            f"stopped watching; the operation goes on: botfleet operations show {operation['id']}"
        )
        raise typer.Exit(output.FAILED) from None
    return operation


def start(
    client: ApiClient, body: dict[str, Any], *, no_wait: bool, idempotency_key: str | None = None
) -> dict[str, Any] | None:
    """Start the operation; with `no_wait` print its id and return None, else the operation
    once it is over."""
    operation = client.bulk_action(body, idempotency_key=idempotency_key)
    if no_wait:
        typer.echo(operation["id"])
        return None
    return follow(client, operation)


def report(
    client: ApiClient,
    operation: dict[str, Any],
    *,
    line: Callable[[dict[str, Any]], str],
    as_json: bool,
    verb: str,
    elsewhere: Sequence[tuple[str, str, str, int]] = (),
    ended_badly: dict[str, str] | None = None,
) -> None:
    """A line per bot acted on (`line(result)`), each failure on stderr, the tally, and the
    exit: a failure's code when they all agree, else 1. `elsewhere`: failures the operation
    never saw (ids that named no bot: `(typed, code, message, exit code)`, already shown);
    `ended_badly`: bots acted on that then ended otherwise than completed (`--wait`).
    `--json`: the results (and `elsewhere` as failed results), nothing else."""
    results = list(client.operation_results(operation["id"]))
    badly = ended_badly or {}
    if as_json:
        missing = [
            {"bot_id": typed, "ok": False, "error": {"code": code, "message": message}}
            for typed, code, message, _ in elsewhere
        ]
        output.print_json(missing + results)
    codes = {exit_code for *_, exit_code in elsewhere}
    for result in results:
        if result["ok"]:
            if not as_json:
                typer.echo(line(result))
            if result["bot_id"] in badly:
                codes.add(output.FAILED)
            continue
        error = result.get("error") or {}
        codes.add(output.exit_code(int(error.get("status") or 0)))
        output.err.print(
            f"[red]error:[/] {output.escape(result['bot_id'])}: "
            f"{output.escape(error.get('code'))}: {output.escape(error.get('message'))}",
            soft_wrap=True,
        )
    for bot_id, status in badly.items():
        output.err.print(f"[red]error:[/] {bot_id}: bot_failed: it ended {status}")
    total = operation["total"] + len(elsewhere)
    failed = operation["failed"] + len(elsewhere) + len(badly)
    word = "bot" if total == 1 else "bots"
    tally = f", {failed} failed" if failed else ""
    cancelled = " (cancelled)" if operation["status"] == "cancelled" else ""
    output.err.print(f"{verb} {operation['done'] - len(badly)} of {total} {word}{tally}{cancelled}")
    if codes or operation["status"] == "cancelled":
        raise typer.Exit(codes.pop() if len(codes) == 1 else output.FAILED)

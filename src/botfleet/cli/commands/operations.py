"""`botfleet operations ls|show|results|cancel`: bulk operations (`bots stop --label …` past a
few bots, `bots reconfigure`, `bots command`, `POST /bots/actions`) read again by id."""

from __future__ import annotations

import typer

from botfleet.cli import help_format, output
from botfleet.cli.commands.bots import bulk
from botfleet.cli.session import connect

app = help_format.Typer(
    help="Bulk operations: their progress, per-bot results, and cancelling one.",
    no_args_is_help=True,
)

OperationId = typer.Argument(..., metavar="ID", help="The operation's id.")
JsonOpt = typer.Option(False, "--json", help="Print the API's JSON, nothing else.")
FIELDS = ["id", "action", "status", "total", "done", "failed", "created_at", "finished_at"]


@app.command("ls")
def list_operations(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=1000, help="How many, newest first."),
    as_json: bool = JsonOpt,
) -> None:
    """Your latest bulk operations, newest first."""
    with connect(ctx) as client:
        page = client.list_operations(limit=limit)
    if as_json:
        output.print_json(page)
        return
    for operation in page["items"]:
        typer.echo(f"{operation['id']}  {bulk.progress_line(operation)}")


@app.command("show")
def show(
    ctx: typer.Context,
    operation_id: str = OperationId,
    wait: bool = typer.Option(False, "--wait", help="Follow its progress until it is over."),
    as_json: bool = JsonOpt,
) -> None:
    """An operation's progress: done and failed of total, running, done or cancelled."""
    with connect(ctx) as client:
        operation = client.get_operation(operation_id)
        if wait:
            operation = bulk.follow(client, operation)
    if as_json:
        output.print_json(operation)
    else:
        output.console.print(output.fields_table(operation, FIELDS))


@app.command("results")
def results(
    ctx: typer.Context,
    operation_id: str = OperationId,
    failed: bool = typer.Option(False, "--failed", help="Only the bots it failed on."),
    as_json: bool = JsonOpt,
) -> None:
    """A line per bot acted on so far: its id, ok or the error's code and message."""
    with connect(ctx) as client:
        rows = list(client.operation_results(operation_id, ok=False if failed else None))
    if as_json:
        output.print_json(rows)
        return
    for row in rows:
        if row["ok"]:
            typer.echo(f"{row['bot_id']} ok {output.json_safe(str(row.get('result') or ''))}")
        else:
            error = row.get("error") or {}
            output.echo(f"{row['bot_id']} {error.get('code')}: {error.get('message')}")


@app.command("cancel")
def cancel(ctx: typer.Context, operation_id: str = OperationId, as_json: bool = JsonOpt) -> None:
    """Stop acting on the remaining bots (those acted on stay so)."""
    with connect(ctx) as client:
        operation = client.cancel_operation(operation_id)
    if as_json:
        output.print_json(operation)
    else:
        typer.echo(bulk.progress_line(operation))

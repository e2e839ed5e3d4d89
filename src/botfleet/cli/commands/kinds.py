"""`botfleet kinds …`: the kinds of bots users may start; registering, updating and retiring
them takes the admin token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from botfleet.cli import help_format, output
from botfleet.cli.api import ApiError
from botfleet.cli.commands.dev import export_kind
from botfleet.cli.session import connect

if TYPE_CHECKING:
    from rich.table import Table

app = help_format.Typer(
    help="Kinds of bots: list them; register, update and retire them (admin token).",
    no_args_is_help=True,
)
JsonOpt = typer.Option(False, "--json", help="Print the API's JSON document, nothing else.")
Name = typer.Argument(..., metavar="NAME", help="The kind's name (`kinds list`).")
DocumentFile = typer.Argument(
    ...,
    metavar="FILE.json",
    help="The kind's document (the POST /admin/kinds body); - reads standard input.",
)


def _read_document(path: str) -> dict[str, Any]:
    try:
        text = typer.get_text_stream("stdin").read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        output.invalid(f"cannot read {path}: {exc.strerror or exc}")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        output.invalid(f"{path} is not JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}")
    if not isinstance(document, dict):
        output.invalid(f"{path} must hold a JSON object (a kind's document)")
    return document


@contextmanager
def _listing_errors() -> Iterator[None]:
    """A refusal with `errors` (a schema, a name) lists each one, path first, before the
    usual `code: message` line."""
    try:
        yield
    except ApiError as exc:
        detail = exc.body.get("detail") if isinstance(exc.body, dict) else None
        for error in (detail or {}).get("errors") or []:
            if isinstance(error, dict) and "path" in error:
                output.err.print(
                    f"  {output.escape(error['path'] or '/')}: {output.escape(error['message'])}"
                )
        raise


def kinds_table(kinds: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("NAME", "VERSION", "SECRETS", "COMMANDS", "DESCRIPTION"):
        table.add_column(column, no_wrap=column != "DESCRIPTION")
    for kind in kinds:
        commands = kind.get("commands")
        table.add_row(
            output.plain(kind["name"] + (" (built-in)" if kind.get("builtin") else "")),
            str(kind["version"]),
            output.plain(",".join(kind.get("secrets") or [])),
            output.plain("any" if commands is None else ",".join(sorted(commands)) or "none"),
            output.plain(kind.get("description") or ""),
        )
    return table


@app.command("list")
def list_kinds(ctx: typer.Context, as_json: bool = JsonOpt) -> None:
    """The kinds you may start (`botfleet bots start KIND`), built-in and registered."""
    with connect(ctx) as client:
        kinds = client.list_kinds()
    if as_json:
        output.print_json(kinds)
    else:
        output.console.print(kinds_table(kinds))


@app.command("show")
def show(ctx: typer.Context, name: str = Name) -> None:
    """One kind as JSON: its latest version, config schema, secrets and commands."""
    with connect(ctx) as client:
        output.print_json(client.get_kind(name))


@app.command("register")
def register(ctx: typer.Context, path: str = DocumentFile, as_json: bool = JsonOpt) -> None:
    """Register a new kind (version 1) from its document; `botfleet kinds export` makes one."""
    document = _read_document(path)
    with connect(ctx, admin=True) as client, _listing_errors():
        kind = client.register_kind(document)
    _done(kind, "registered", as_json)


@app.command("update")
def update(
    ctx: typer.Context, name: str = Name, path: str = DocumentFile, as_json: bool = JsonOpt
) -> None:
    """Register the kind's next version (running bots keep theirs; a retired kind returns)."""
    document = {k: v for k, v in _read_document(path).items() if k != "name"}
    with connect(ctx, admin=True) as client, _listing_errors():
        kind = client.update_kind(name, document)
    _done(kind, "updated", as_json)


@app.command("retire")
def retire(ctx: typer.Context, name: str = Name) -> None:
    """No new bots of the kind start; running ones run on."""
    with connect(ctx, admin=True) as client:
        client.retire_kind(name)
    typer.echo(f"kind {name} retired")


def _done(kind: dict[str, Any], what: str, as_json: bool) -> None:
    if as_json:
        output.print_json(kind)
    else:
        typer.echo(f"kind {kind['name']} {what}: version {kind['version']}")


# Last in `kinds --help`: it writes the document `register` reads (with `dev run`, for authors).
app.command("export")(export_kind)

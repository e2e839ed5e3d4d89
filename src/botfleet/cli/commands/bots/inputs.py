"""What `botfleet bots …` reads from its command line: the shared options, `key=value` pairs,
`--label key:value`, and JSON files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from botfleet.cli import output

JsonOpt = typer.Option(False, "--json", help="Print the API's JSON document, nothing else.")
WaitTimeout = typer.Option(
    120.0, "--timeout", metavar="SECONDS", help="Seconds --wait waits at most."
)
BotId = typer.Argument(
    ..., metavar="ID", help="The bot's id: whole, its short id (as `ls` shows), or a prefix."
)
BotIds = typer.Argument(
    None,
    metavar="ID",
    help="Bots' ids: whole, short (as `ls` shows), or a prefix; or --label instead.",
)
LabelSelector = typer.Option(
    [],
    "--label",
    "-l",
    metavar="KEY:VALUE",
    help="Every bot with this label (all of them when repeated), instead of ids.",
)
Yes = typer.Option(False, "--yes", "-y", help="Act on every bot --label matches without asking.")
IdempotencyKey = typer.Option(
    None, "--idempotency-key", metavar="KEY", help="Retry safely: the same answer again."
)
WaitActive = typer.Option(False, "--wait", help="Wait until active (exit 1 if it fails).")


def parse_value(text: str) -> Any:
    """JSON when it parses (`3`, `true`, `{"a": 1}`), else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_json_option(text: str, option: str) -> Any:
    """A JSON value given on the command line; a usage error naming the option if it is not."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint=option) from exc


def parse_pairs(pairs: list[str], *, typed: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for pair in pairs:
        key, found, value = pair.partition("=")
        if not found or not key:
            output.invalid(f"expected key=value, got {pair!r}")
        result[key] = parse_value(value) if typed else value
    return result


def parse_labels(pairs: list[str]) -> list[tuple[str, str]]:
    """`--label key:value`, the API's syntax (`?label=key:value`, the dashboard's filter).
    `key=value`, the CLI's old one, still works, with a warning. A key holds neither `:` nor
    `=`, so the first of them is the separator: `url:http://x` and `team:a=b` are key:value."""
    labels = []
    for pair in pairs:
        cut = min((i for i in (pair.find(":"), pair.find("=")) if i >= 0), default=-1)
        key, value = pair[:cut], pair[cut + 1 :]
        if cut <= 0:
            output.invalid(f"expected --label key:value, got {pair!r}")
        if pair[cut] == "=":
            output.err.print(
                f"[yellow]warning:[/] write --label {output.escape(key)}:{output.escape(value)} "
                "(key:value); key=value is the old spelling",
                soft_wrap=True,
            )
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

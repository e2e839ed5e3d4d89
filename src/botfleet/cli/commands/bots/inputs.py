"""What `botfleet bots …` reads from its command line: the shared options, `key=value` pairs,
`--label key=value`, and JSON files."""

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
BotId = typer.Argument(..., metavar="ID", help="The bot's id.")
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

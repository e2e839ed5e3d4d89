"""`botfleet kinds list|show|register|update|retire` against a real manager: writes need the
admin token, a refused schema lists each error with its path, exit codes as for every command."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from botfleet.cli import output
from botfleet.cli.main import app
from tests.support import ADMIN_TOKEN, Manager

UNSET = {"BOTFLEET_URL": None, "BOTFLEET_KEY": None, "BOTFLEET_ADMIN_TOKEN": None}


@pytest.fixture(autouse=True)
def fresh_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Consoles made per run, wide enough that no line wraps (see test_cli.py)."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(output, "console", Console(highlight=False))
    monkeypatch.setattr(output, "err", Console(stderr=True, highlight=False))


@pytest.fixture
def run(tmp_path: Path):
    runner = CliRunner()

    def invoke(*args: str, **env: str | None) -> Result:
        full = {**UNSET, "BOTFLEET_CONFIG": str(tmp_path / "absent.toml"), **env}
        return runner.invoke(app, list(args), env=full, catch_exceptions=False)

    return invoke


def test_kinds_commands(manager: Manager, run, tmp_path: Path) -> None:
    user, _ = manager.new_user()
    admin = {"BOTFLEET_URL": manager.url, "BOTFLEET_ADMIN_TOKEN": ADMIN_TOKEN}
    as_user = {"BOTFLEET_URL": manager.url, "BOTFLEET_KEY": user["api_key"]}
    name = f"cli-kind-{uuid.uuid4().hex[:8]}"
    document = {
        "name": name,
        "run": {"python": "botfleet.runtime.bots.demo:DemoBot"},
        "config_schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
        "secrets": ["token"],
        "description": "from a file",
    }
    path = tmp_path / "kind.json"
    path.write_text(json.dumps(document))

    refused = run("kinds", "register", str(path), **as_user)
    assert refused.exit_code == 6, refused.output  # a user's key is not the admin token
    registered = run("kinds", "register", str(path), **admin)
    assert registered.exit_code == 0, registered.output
    assert registered.stdout.strip() == f"kind {name} registered: version 1"
    again = run("kinds", "register", str(path), **admin)
    assert again.exit_code != 0 and "kind_exists" in again.output

    listed = run("kinds", "list", **as_user)
    assert listed.exit_code == 0 and name in listed.stdout and "demo (built-in)" in listed.stdout
    names = {k["name"] for k in json.loads(run("kinds", "list", "--json", **as_user).stdout)}
    assert {"demo", "telegram", name} <= names
    shown = json.loads(run("kinds", "show", name, **as_user).stdout)
    assert shown["secrets"] == ["token"] and shown["version"] == 1

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**document, "config_schema": {"type": "objekt"}}))
    invalid = run("kinds", "update", name, str(bad), **admin)
    assert invalid.exit_code == 2, invalid.output  # input refused
    assert "/config_schema/type" in invalid.output and "invalid_schema" in invalid.output
    updated = run("kinds", "update", name, str(path), "--json", **admin)  # `name` is dropped
    assert updated.exit_code == 0, updated.output
    assert json.loads(updated.stdout)["version"] == 2

    not_json = tmp_path / "not.json"
    not_json.write_text("{")
    assert run("kinds", "register", str(not_json), **admin).exit_code == 2

    assert run("kinds", "retire", name, **admin).stdout.strip() == f"kind {name} retired"
    assert name not in run("kinds", "list", **as_user).stdout
    assert run("kinds", "retire", "no-such-kind", **admin).exit_code == 3

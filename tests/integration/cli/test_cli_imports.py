"""A simple command stays quick (issue 29, point 5): `botfleet bots ls` took 1.5-3 s, most of
it importing the manager's settings (pydantic-settings) and loading the CA bundle into an SSL
context for a plain-http URL; then 0.3 s, two thirds of it pydantic (typer's conversion of the
options) and httpx, the rest Rich where nothing is drawn and the other commands' modules.
Speed is measured (`make bench`, bench/cli.py), never asserted by a timed test: this checks
instead what a command imports, whether it loads any certificate and how many requests it makes,
in a fresh process as the `botfleet` command runs, against a real manager."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO, Manager

#: What no simple client command needs: the manager, its web framework, database and settings.
HEAVY = ("botfleet.manager", "fastapi", "starlette", "sqlalchemy", "pydantic_settings", "alembic")
#: What a direct connection does without (botfleet.cli.transport), as well as what httpx would
#: import and a sync client never runs (botfleet.cli.httpx_client).
HTTPX = ("httpx", "httpcore", "h11", "anyio", "trio")
#: What typer would import to convert the options of any command (botfleet.cli.quick_params).
CONVERSION = ("pydantic", "pydantic_core")

#: Runs the CLI as `botfleet ARGS` does, then writes the modules it imported, every time a
#: certificate store was loaded into an SSL context (`ssl.create_default_context`, httpx's own
#: context for https, all do one of these) and the path of every request it sent.
WRAPPER = """
import atexit, json, ssl, sys

report, sys.argv = sys.argv[1], ["botfleet", *sys.argv[2:]]
loads = []
for name in ("load_verify_locations", "set_default_verify_paths", "load_default_certs"):
    def spy(self, *args, _real=getattr(ssl.SSLContext, name), _name=name, **kwargs):
        loads.append(_name)
        return _real(self, *args, **kwargs)
    setattr(ssl.SSLContext, name, spy)

requests = []
def write():
    with open(report, "w") as handle:
        json.dump(
            {"modules": sorted(sys.modules), "certificate_loads": loads, "requests": requests},
            handle,
        )

import socket
for name in ("send", "sendall"):  # each request's head, whichever client sends it
    def spy(self, data, *args, _real=getattr(socket.socket, name)):
        method, _, rest = bytes(data[:300]).partition(b" ")
        if method in (b"GET", b"POST", b"PUT", b"PATCH", b"DELETE"):
            requests.append(rest.split(b" ")[0].split(b"?")[0].decode())
        return _real(self, data, *args)
    setattr(socket.socket, name, spy)

atexit.register(write)
from botfleet.cli.main import app
app()
"""


def imported_by(tmp_path: Path, *args: str, **env: str) -> tuple[dict[str, Any], str]:
    """What `botfleet ARGS` imported and loaded, and its stdout."""
    wrapper, report = tmp_path / "wrapper.py", tmp_path / "report.json"
    wrapper.write_text(WRAPPER)
    full = {k: v for k, v in os.environ.items() if not k.startswith("BOTFLEET_")}
    full.update(env, BOTFLEET_CONFIG=str(tmp_path / "absent.toml"), COLUMNS="200")
    done = subprocess.run(
        [sys.executable, str(wrapper), str(report), *args],
        cwd=REPO, env=full, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(report.read_text()), done.stdout


def heavy_in(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY)]


def packages_in(modules: list[str], *packages: str) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & set(packages))


def other_commands_in(modules: list[str], own: str) -> list[str]:
    """The command modules imported besides the running command's own (its group's)."""
    commands = "botfleet.cli.commands."
    return [m for m in modules if m.startswith(commands) and not m.startswith(commands + own)]


@pytest.fixture
def user(manager: Manager) -> dict[str, str]:
    created, client = manager.new_user()
    client.close()
    return {"BOTFLEET_URL": manager.url, "BOTFLEET_KEY": created["api_key"]}


def test_listing_and_showing_a_bot_import_nothing_of_the_manager(
    tmp_path: Path, user: dict[str, str]
) -> None:
    assert user["BOTFLEET_URL"].startswith("http://")
    later = "2999-01-01T00:00:00Z"  # a bot that never runs: nothing to wait for
    started, out = imported_by(tmp_path, "bots", "start", "demo", "--start-at", later, **user)
    bot_id = out.strip()
    assert heavy_in(started["modules"]) == [] and started["certificate_loads"] == []

    for args in (["bots", "ls"], ["bots", "show", bot_id[-8:]], ["bots", "show", bot_id]):
        loaded, out = imported_by(tmp_path, *args, **user)
        assert bot_id[-8:] in out  # it did talk to the manager
        assert heavy_in(loaded["modules"]) == [], args
        assert loaded["certificate_loads"] == [], args  # no CA bundle for a plain-http URL
        assert "http.client" in loaded["modules"]  # the wrapper sees what the command imports
        # A direct connection is http.client's (botfleet.cli.transport): no httpx, no pydantic.
        assert packages_in(loaded["modules"], *HTTPX, *CONVERSION) == [], args
        assert other_commands_in(loaded["modules"], "bots") == [], args


def test_plain_answers_import_no_rich(tmp_path: Path, user: dict[str, str]) -> None:
    """Rich draws tables and colours; an answer with neither (JSON, a line of text) needs none
    of it, nor does `kinds list` need the commands of `bots`."""
    later = "2999-01-01T00:00:00Z"
    _, out = imported_by(tmp_path, "bots", "start", "demo", "--start-at", later, **user)
    bot_id = out.strip()
    listed, out = imported_by(tmp_path, "bots", "ls", "--json", **user)
    assert json.loads(out)["items"][0]["id"] == bot_id
    stopped, out = imported_by(tmp_path, "bots", "stop", bot_id, **user)
    assert out.split() == [bot_id, "completed"]  # a bot not started yet ends at once
    for loaded in (listed, stopped):
        assert packages_in(loaded["modules"], "rich", *HTTPX, *CONVERSION) == []
        assert other_commands_in(loaded["modules"], "bots") == []
    kinds, out = imported_by(tmp_path, "kinds", "list", **user)
    assert "demo" in out and "rich" in kinds["modules"]  # a table
    assert packages_in(kinds["modules"], *HTTPX, *CONVERSION) == []
    # `kinds export` is `dev`'s (kind authors'), registered with `kinds`: dev, not `bots`.
    dev = {"botfleet.cli.commands.dev", "botfleet.cli.commands.events"}
    assert set(other_commands_in(kinds["modules"], "kinds")) <= dev


def test_showing_a_bot_by_its_short_id_asks_for_it_once(
    tmp_path: Path, user: dict[str, str]
) -> None:
    """Looking a short id up lists the bot itself: `show` uses that row, no second GET."""
    later = "2999-01-01T00:00:00Z"
    _, out = imported_by(tmp_path, "bots", "start", "demo", "--start-at", later, **user)
    bot_id = out.strip()
    for typed, asked in ((bot_id[-8:], ["/bots"]), (bot_id, [f"/bots/{bot_id}"])):
        loaded, out = imported_by(tmp_path, "bots", "show", typed, "--json", **user)
        assert json.loads(out)["id"] == bot_id
        assert loaded["requests"] == [*asked, f"/bots/{bot_id}/transitions"], typed


def test_help_imports_no_http_client_and_no_manager_internals(tmp_path: Path) -> None:
    loaded, out = imported_by(tmp_path, "--help")
    assert "serve" in out and "bots" in out  # the manager's commands are listed too
    modules = loaded["modules"]
    # Listing `serve` and `migrate` loads their module, and nothing of what they run.
    assert heavy_in(modules) == ["botfleet.manager", "botfleet.manager.server_commands"]
    assert packages_in(modules, *HTTPX, *CONVERSION) == []
    assert "http.client" not in modules  # no client is made

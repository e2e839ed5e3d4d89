"""A simple command stays quick (issue 29, point 5): `botfleet bots ls` took 1.5-3 s, most of
it importing the manager's settings (pydantic-settings) and loading the CA bundle into an SSL
context for a plain-http URL. Speed is measured, never asserted by a timed test: this checks
instead what the command imports and whether it loads any certificate, in a fresh process as the
`botfleet` command runs, against a real manager."""

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
#: What httpx and httpcore would import and a sync client never runs (botfleet.cli.api).
NEVER_RUN = ("httpx._main", "trio")

#: Runs the CLI as `botfleet ARGS` does, then writes the modules it imported and every time a
#: certificate store was loaded into an SSL context (`ssl.create_default_context`, httpx's own
#: context for https, all do one of these).
WRAPPER = """
import atexit, json, ssl, sys

report, sys.argv = sys.argv[1], ["botfleet", *sys.argv[2:]]
loads = []
for name in ("load_verify_locations", "set_default_verify_paths", "load_default_certs"):
    def spy(self, *args, _real=getattr(ssl.SSLContext, name), _name=name, **kwargs):
        loads.append(_name)
        return _real(self, *args, **kwargs)
    setattr(ssl.SSLContext, name, spy)

def write():
    with open(report, "w") as handle:
        json.dump({"modules": sorted(sys.modules), "certificate_loads": loads}, handle)

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
        assert "httpx" in loaded["modules"]  # the wrapper sees what the command imports
        assert [m for m in NEVER_RUN if m in loaded["modules"]] == [], args


def test_help_imports_no_http_client_and_no_manager_internals(tmp_path: Path) -> None:
    loaded, out = imported_by(tmp_path, "--help")
    assert "serve" in out and "bots" in out  # the manager's commands are listed too
    modules = loaded["modules"]
    # Listing `serve` and `migrate` loads their module, and nothing of what they run.
    assert heavy_in(modules) == ["botfleet.manager", "botfleet.manager.server_commands"]
    assert [m for m in modules if m.split(".")[0] in {"httpx", "httpcore"}] == []

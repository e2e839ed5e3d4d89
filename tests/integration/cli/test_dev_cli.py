"""`botfleet kinds export` and `botfleet dev run`: a bot class from this checkout
(tests/bots/greeter.py) exported as a kind document, then run against a real manager with
commands typed on stdin and the bot's log, reports and answers read from the terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from botfleet.cli.main import app
from tests.support import ADMIN_TOKEN, REPO, Manager, RedisServer, running_manager, wait_until

GREETER = "tests.bots.greeter:GreeterBot"
MANAGER_ENV = {
    "PYTHONPATH": str(REPO),  # the bot's process imports tests.bots.greeter
    "BOTFLEET_ALLOWED_BOT_MODULES": '["tests.bots.greeter"]',  # for the module:Class path
}


@pytest.fixture(scope="module")
def dev_manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("dev-manager")
    with running_manager(root, redis_server.url, extra_env=MANAGER_ENV) as instance:
        yield instance


class Terminal:
    """`botfleet dev run` as a process, its stdin a pipe, its output (both streams) gathered."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        full = {k: v for k, v in os.environ.items() if not k.startswith("BOTFLEET_")}
        full.update(env, COLUMNS="200", BOTFLEET_CONFIG=str(REPO / "absent.toml"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "botfleet.cli.main", "dev", "run", *args],
            cwd=REPO, env=full, text=True, bufsize=1,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def shows(self, text: str, timeout: float = 60) -> str:
        def found() -> str | None:
            return next((line for line in self.lines if text in line), None)

        try:
            line: str = wait_until(found, timeout=timeout, what=repr(text))
        except AssertionError:
            raise AssertionError(f"{text!r} not shown; output:\n" + "\n".join(self.lines)) from None
        return line

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def user_env(manager: Manager, *, admin: bool) -> dict[str, str]:
    created, client = manager.new_user()
    client.close()
    env = {"BOTFLEET_URL": manager.url, "BOTFLEET_KEY": created["api_key"]}
    if admin:
        env["BOTFLEET_ADMIN_TOKEN"] = ADMIN_TOKEN
    return env


def run_session(terminal: Terminal) -> None:
    """The same conversation whichever way the bot was started."""
    terminal.shows("greeter started: 'hi' x1")  # the bot's log
    terminal.shows('report {"greeting":"hi"}')  # its report, from the event stream
    terminal.type('greet {"name": "Ada"}')
    terminal.shows('greet acked: {"text": "hi Ada"}')
    terminal.type("count")
    terminal.shows('count acked: {"numbers": [1, 2, 3]}')
    terminal.type('reconfigure {"greeting": "hey", "report_on_start": true}')
    terminal.shows("greeter reconfigured: 'hey'")
    terminal.type('greet {"name": "Bo", "shout": true}')
    terminal.shows('greet acked: {"text": "HEY BO"}')
    terminal.type("leave")
    terminal.shows("completed")
    assert terminal.close() == 0


def test_dev_run_registers_the_kind_and_talks_to_the_bot(dev_manager: Manager) -> None:
    env = user_env(dev_manager, admin=True)
    terminal = Terminal(
        [GREETER, "--config", '{"greeting": "hi", "report_on_start": true}',
         "--secret", "api_key=k-1", "--kind", "dev-greeter"],
        env,
    )  # fmt: skip
    registered = terminal.shows("dev-greeter version")
    if "no kinds API" in "\n".join(terminal.lines):
        pytest.fail("the manager has no kinds API")
    # A wrong payload is refused by the manager from the kind's schema, with its path.
    terminal.shows("greeter started")
    terminal.type('greet {"name": 3}')
    terminal.shows("invalid_payload")
    terminal.shows("/name")
    run_session(terminal)
    assert "registered" in registered
    with dev_manager.admin() as admin:
        kind = admin.get("/kinds/dev-greeter").json()
    assert set(kind["commands"]) == {"greet", "count", "key_length"}
    assert kind["secrets"] == ["api_key"]


def test_dev_run_without_admin_token_starts_module_class(dev_manager: Manager) -> None:
    terminal = Terminal(
        [GREETER, "--config", '{"greeting": "hi", "report_on_start": true}',
         "--secret", "api_key=k-1"],
        user_env(dev_manager, admin=False),
    )  # fmt: skip
    terminal.shows(f"starting the bot as {GREETER}")
    run_session(terminal)


def test_dev_run_checks_the_config_before_asking_the_manager() -> None:
    result = CliRunner().invoke(
        app,
        ["dev", "run", GREETER, "--config", '{"repeat": 0}', "--secret", "api_key=k"],
        env={"BOTFLEET_URL": "http://stand-in.invalid", "BOTFLEET_KEY": "bf_x"},
    )
    assert result.exit_code == 2, result.output
    assert "invalid_config: /repeat: Input should be greater than or equal to 1" in result.output
    missing = CliRunner().invoke(app, ["dev", "run", GREETER], env={"BOTFLEET_KEY": "bf_x"})
    assert missing.exit_code == 2 and "missing_secret: api_key" in missing.output


def test_kinds_export_prints_the_document(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["kinds", "export", GREETER, "--name", "greeter-2"])
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.output)
    assert document["name"] == "greeter-2"
    assert document["run"] == {"python": GREETER}
    assert document["config_schema"]["properties"]["repeat"]["maximum"] == 5
    bad = CliRunner().invoke(app, ["kinds", "export", "nope:Nope"])
    assert bad.exit_code == 2 and "cannot import" in bad.output

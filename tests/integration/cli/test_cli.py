"""The `botfleet` CLI against a real manager: output, exit codes, connection precedence."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from botfleet.cli import output, transport
from botfleet.cli.api import ApiClient
from botfleet.cli.config import Connection
from botfleet.cli.main import app
from tests.support import ADMIN_TOKEN, Manager

UNSET = {"BOTFLEET_URL": None, "BOTFLEET_KEY": None, "BOTFLEET_ADMIN_TOKEN": None}


@pytest.fixture(autouse=True)
def consoles_sized_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's consoles take COLUMNS from the environment when they are made (on first use,
    once per process), as the `botfleet` command does at its start. In-process runs set COLUMNS
    per run, and an xdist worker has COLUMNS=80 in its environment: fresh consoles, made
    without it, read each run's own."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(output, "console", Console(highlight=False))
    monkeypatch.setattr(output, "err", Console(stderr=True, highlight=False))


@pytest.fixture
def run(tmp_path: Path):
    """Invoke the CLI with only the env given (plus a config path that does not exist)."""
    runner = CliRunner()

    def invoke(*args: str, **env: str | None) -> Result:
        full = {**UNSET, "BOTFLEET_CONFIG": str(tmp_path / "absent.toml"), **env}
        return runner.invoke(app, list(args), env=full, catch_exceptions=False)

    return invoke


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[httpx.Request]:
    """The requests the CLI sends, answered by a stand-in API: what the server would receive."""
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        route = (request.method, request.url.path)
        if route == ("POST", "/bots"):
            return httpx.Response(201, json={"id": "bot-1", "status": "requested"})
        if route == ("GET", "/bots"):
            return httpx.Response(200, json={"items": [], "next_cursor": None})
        if route in {("PATCH", "/bots/bot-1/config"), ("PUT", "/bots/bot-1/config")}:
            return httpx.Response(202, json={"id": "cmd-1", "status": "pending"})
        return httpx.Response(404, json={"detail": {"code": "not_found", "message": "no"}})

    real_client = httpx.Client
    monkeypatch.setattr(transport, "USE_HTTPX", True)  # the CLI's http.client would not see it
    monkeypatch.setattr(
        httpx,
        "Client",
        lambda **kwargs: real_client(transport=httpx.MockTransport(answer), **kwargs),
    )
    return requests


STAND_IN = {"BOTFLEET_URL": "http://stand-in.invalid", "BOTFLEET_KEY": "bf_test"}


@pytest.fixture
def user(manager: Manager) -> dict[str, Any]:
    created, client = manager.new_user()
    client.close()
    return {"BOTFLEET_URL": manager.url, "BOTFLEET_KEY": created["api_key"]}


def test_users_admin_commands(manager: Manager, run) -> None:
    admin = {"BOTFLEET_URL": manager.url, "BOTFLEET_ADMIN_TOKEN": ADMIN_TOKEN}
    name = f"cli-{uuid.uuid4().hex[:8]}"
    result = run("users", "create", name, "--max-bots", "3", **admin)
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert key.startswith("bf_") and "\n" not in key
    with ApiClient(manager.url, key) as client:  # the printed key works
        assert client.list_bots()["items"] == []

    listed = json.loads(run("users", "ls", "--json", **admin).stdout)
    user_id = next(u["id"] for u in listed if u["name"] == name)
    assert name in run("users", "ls", **admin).stdout
    assert run("users", "limit", user_id, "5", **admin).stdout.strip().endswith("=5")
    assert run("users", "key", user_id, **admin).stdout.strip().startswith("bf_")
    # A user key is not an admin token.
    assert run("users", "ls", BOTFLEET_URL=manager.url, BOTFLEET_ADMIN_TOKEN=key).exit_code == 6


def test_bot_lifecycle(run, user: dict[str, str]) -> None:
    started = run(
        "bots", "start", "demo", "--name", "standup", "-c", "lang=en", "-c", "n=3",
        "--label", "team:sales", "--wait", **user,
    )  # fmt: skip
    assert started.exit_code == 0, started.output
    bot_id = started.stdout.strip()
    assert "active" in started.stderr

    table = run("bots", "ls", **user)
    assert table.exit_code == 0 and bot_id[-8:] in table.stdout and "standup" in table.stdout
    page = json.loads(
        run("bots", "ls", "--label", "team:sales", "--status", "active", "--json", **user).stdout
    )
    assert [b["id"] for b in page["items"]] == [bot_id]
    others = json.loads(run("bots", "ls", "--label", "team:ops", "--json", **user).stdout)
    assert others["items"] == []
    assert page["items"][0]["config"] == {"lang": "en", "n": 3}
    every = json.loads(run("bots", "ls", "--all", "--limit", "1", "--json", **user).stdout)
    assert [b["id"] for b in every["items"]] == [bot_id]

    shown = run("bots", "show", bot_id, **user)
    assert shown.exit_code == 0 and "transitions" in shown.stdout
    assert re.search(r"labels\s+team:sales\s", shown.stdout)  # as --label takes it
    assert "requested" in shown.stdout and "starting" in shown.stdout
    doc = json.loads(run("bots", "show", bot_id, "--json", **user).stdout)
    assert [t["to"] for t in doc["transitions"]] == ["starting", "active"]

    configured = run("bots", "config", bot_id, "lang=de", "flag=true", "--wait", **user)
    assert configured.exit_code == 0, configured.output
    assert configured.stdout.split()[1] == "acked"
    bot = json.loads(run("bots", "show", bot_id, "--json", **user).stdout)
    assert bot["config"]["lang"] == "de" and bot["config"]["flag"] is True

    logs = run("bots", "logs", bot_id, "--tail", "50", **user)
    assert logs.exit_code == 0 and f"demo bot {bot_id} started" in logs.stdout

    stopped = run("bots", "stop", bot_id, "--wait", "--json", **user)
    assert stopped.exit_code == 0, stopped.output
    assert json.loads(stopped.stdout)["status"] == "completed"
    # Reconfiguring an ended bot is a conflict.
    late = run("bots", "config", bot_id, "lang=fr", **user)
    assert late.exit_code == 4 and "error: illegal_transition" in late.stderr


def test_refused_reconfigure_exits_non_zero(run, user: dict[str, str]) -> None:
    bot_id = run(
        "bots", "start", "demo", "-c", "refuse_reconfigure=true", "--wait", **user
    ).stdout.strip()
    refused = run("bots", "config", bot_id, "lang=de", "--wait", **user)
    assert refused.exit_code == 1
    assert "error: command failed" in refused.stderr and "refuse" in refused.stderr
    assert run("bots", "stop", bot_id, **user).exit_code == 0


def test_error_exit_codes(manager: Manager, run, user: dict[str, str], refused_url: str) -> None:
    missing = run("bots", "show", "no-such-bot", **user)
    assert missing.exit_code == 3 and "error: bot_not_found" in missing.stderr
    assert missing.stdout == ""

    bad_key = run("bots", "ls", BOTFLEET_URL=manager.url, BOTFLEET_KEY="bf_wrong")
    assert bad_key.exit_code == 6 and bad_key.stderr.startswith("error:")

    invalid = run("bots", "start", "Not A Bot!", **user)
    assert invalid.exit_code == 2 and "error: invalid_input" in invalid.stderr

    nowhere = refused_url
    unreachable = run("bots", "ls", BOTFLEET_URL=nowhere, BOTFLEET_KEY="bf_x")
    assert unreachable.exit_code == 7
    assert "connection refused" in unreachable.stderr and "--url" in unreachable.stderr


def test_connection_precedence(
    tmp_path: Path,
    manager: Manager,
    run,
    user: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    refused_url: str,
) -> None:
    nowhere = refused_url
    config = tmp_path / "config.toml"
    config.write_text(
        f'url = "{manager.url}"\nkey = "{user["BOTFLEET_KEY"]}"\nadmin_token = "from-file"\n'
    )
    from_file = {"BOTFLEET_CONFIG": str(config)}
    assert run("bots", "ls", **from_file).exit_code == 0  # the file alone is enough
    assert run("bots", "ls", **from_file, BOTFLEET_URL=nowhere).exit_code == 7  # env > file
    flag = run("--url", manager.url, "bots", "ls", **from_file, BOTFLEET_URL=nowhere)
    assert flag.exit_code == 0  # flag > env
    assert run("--key", "bf_wrong", "bots", "ls", **from_file).exit_code == 6

    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BOTFLEET_CONFIG", str(config))
    assert Connection().resolve(admin=True) == (manager.url, "from-file")
    monkeypatch.setenv("BOTFLEET_ADMIN_TOKEN", "from-env")
    assert Connection().resolve(admin=True) == (manager.url, "from-env")
    assert Connection(key="from-flag").resolve(admin=True)[1] == "from-flag"
    monkeypatch.setenv("BOTFLEET_CONFIG", str(tmp_path / "absent.toml"))
    assert Connection().resolve() == ("http://127.0.0.1:8080", None)


def test_start_always_sends_a_config(run, sent: list[httpx.Request]) -> None:
    started = run("bots", "start", "demo", **STAND_IN)
    assert started.exit_code == 0, started.output
    assert started.stdout.strip() == "bot-1"
    assert json.loads(sent[-1].content) == {"bot": "demo", "config": {}}

    run("bots", "start", "demo", "-c", "n=3", "--label", "team:sales", **STAND_IN)
    assert json.loads(sent[-1].content) == {
        "bot": "demo",
        "config": {"n": 3},
        "labels": {"team": "sales"},
    }


def test_start_sends_health_rules_as_given(run, sent: list[httpx.Request]) -> None:
    rule = {"when": {"no_report_for_s": 60}, "then": "restart"}
    started = run("bots", "start", "demo", "--health", json.dumps(rule), **STAND_IN)
    assert started.exit_code == 0, started.output
    assert json.loads(sent[-1].content)["health"] == [rule]
    refused = run("bots", "start", "demo", "--health", "{not json", **STAND_IN)
    assert refused.exit_code == 2 and "--health" in refused.output, refused.output


def test_start_sends_resources_and_placement(run, sent: list[httpx.Request]) -> None:
    started = run(
        "bots", "start", "demo", "--cpu", "0.5", "--memory", "256",
        "--constraint", "${meta.zone} = a", "--constraint", "${attr.kernel.name} = linux",
        "--node-label", "disk=ssd", "--datacenter", "dc1", **STAND_IN,
    )  # fmt: skip
    assert started.exit_code == 0, started.output
    body = json.loads(sent[-1].content)
    assert body["resources"] == {"cpu": 0.5, "memory_mb": 256}
    assert body["placement"] == {
        "constraints": ["${meta.zone} = a", "${attr.kernel.name} = linux"],
        "node_labels": {"disk": "ssd"},
        "datacenters": ["dc1"],
    }
    run("bots", "start", "demo", "--memory", "300", **STAND_IN)
    assert json.loads(sent[-1].content) == {
        "bot": "demo",
        "config": {},
        "resources": {"memory_mb": 300},
    }


def test_every_label_option_takes_key_colon_value(run, sent: list[httpx.Request]) -> None:
    """`key:value`, the API's and the dashboard's syntax; the first `:` separates (a key has
    none), so a value may hold `:` or `=`."""
    listed = run("bots", "ls", "--label", "team:sales", "-l", "url:http://x", **STAND_IN)
    assert listed.exit_code == 0 and listed.stderr == "", listed.output
    assert sent[-1].url.params.get_list("label") == ["team:sales", "url:http://x"]
    started = run("bots", "start", "demo", "-l", "team:sales", "-l", "eq:a=b", **STAND_IN)
    assert started.exit_code == 0 and started.stderr == "", started.output
    assert json.loads(sent[-1].content)["labels"] == {"team": "sales", "eq": "a=b"}

    # The CLI's old `key=value` still works, wherever a label is typed, with a warning.
    warning = "warning: write --label team:sales (key:value); key=value is the old spelling\n"
    for command in (["bots", "ls"], ["bots", "start", "demo"], ["bots", "stop", "--yes"]):
        warned = run(*command, "--label", "team=sales", **STAND_IN)
        assert warned.exit_code == 0 and warned.stderr.startswith(warning), warned.output
        if command[1] == "start":
            assert json.loads(sent[-1].content)["labels"] == {"team": "sales"}
        else:
            assert sent[-1].url.params.get_list("label") == ["team:sales"]
    before = len(sent)
    for bad in ("team", ":sales", "=sales"):
        refused = run("bots", "ls", "--label", bad, **STAND_IN)
        assert refused.exit_code == 2 and "expected --label key:value" in refused.stderr
    assert len(sent) == before


def test_config_merges_by_default_and_replaces_on_request(
    run, sent: list[httpx.Request], tmp_path: Path
) -> None:
    merged = run("bots", "config", "bot-1", "lang=de", "n=null", **STAND_IN)
    assert merged.exit_code == 0, merged.output
    assert merged.stdout.split() == ["cmd-1", "pending"]
    assert (sent[-1].method, sent[-1].url.path) == ("PATCH", "/bots/bot-1/config")
    assert json.loads(sent[-1].content) == {"config": {"lang": "de", "n": None}}

    replaced = run("bots", "config", "bot-1", "--replace", "lang=de", **STAND_IN)
    assert replaced.exit_code == 0, replaced.output
    assert (sent[-1].method, sent[-1].url.path) == ("PUT", "/bots/bot-1/config")
    assert json.loads(sent[-1].content) == {"config": {"lang": "de"}}

    whole = tmp_path / "config.json"
    whole.write_text('{"mode": "quiet"}')
    assert run("bots", "config", "bot-1", "--replace", "-f", str(whole), **STAND_IN).exit_code == 0
    assert (sent[-1].method, json.loads(sent[-1].content)) == ("PUT", {"config": {"mode": "quiet"}})


def test_config_merge_and_replace_against_the_manager(run, user: dict[str, str]) -> None:
    bot_id = run(
        "bots", "start", "demo", "-c", "lang=en", "-c", "n=3",
        "-c", 'style={"tone": "dry", "emoji": true}', "--wait", **user,
    ).stdout.strip()  # fmt: skip

    def config() -> dict[str, Any]:
        return json.loads(run("bots", "show", bot_id, "--json", **user).stdout)["config"]

    merged = run(
        "bots", "config", bot_id, "lang=de", "n=null", 'style={"emoji": null}', "--wait", **user
    )
    assert merged.exit_code == 0, merged.output
    assert config() == {"lang": "de", "style": {"tone": "dry"}}

    replaced = run("bots", "config", bot_id, "--replace", "mode=quiet", "--wait", **user)
    assert replaced.exit_code == 0, replaced.output
    assert config() == {"mode": "quiet"}
    assert run("bots", "stop", bot_id, **user).exit_code == 0


def test_start_without_settings_runs_with_an_empty_config(run, user: dict[str, str]) -> None:
    started = run("bots", "start", "demo", "--wait", **user)
    assert started.exit_code == 0, started.output
    bot_id = started.stdout.strip()
    assert json.loads(run("bots", "show", bot_id, "--json", **user).stdout)["config"] == {}
    assert run("bots", "stop", bot_id, **user).exit_code == 0


def test_show_wraps_a_long_detail_instead_of_cutting_it(run, user: dict[str, str]) -> None:
    failed = run("bots", "start", "demo", "-c", "fail_on_start=true", "--wait", **user)
    assert failed.exit_code == 1, failed.output
    bot_id = failed.stdout.strip()
    history = json.loads(run("bots", "show", bot_id, "--json", **user).stdout)["transitions"]
    detail = history[-1]["detail"]
    assert len(detail) > 40, history  # longer than DETAIL's room at 80 columns

    def detail_column(columns: int) -> tuple[str, str]:
        shown = run("bots", "show", bot_id, COLUMNS=str(columns), **user)
        assert shown.exit_code == 0, shown.output
        lines = shown.stdout.splitlines()
        assert max(map(len, lines)) <= columns
        top = next(i for i, line in enumerate(lines) if re.search(r"\bAT\s+FROM\s+TO\b", line))
        start = lines[top].index("DETAIL")
        text = "".join(line[start:] for line in lines[top + 1 :])
        return lines[top], text

    for columns in (80, 200):
        header, text = detail_column(columns)
        assert header.rstrip().endswith("DETAIL")
        assert "…" not in text
        assert re.sub(r"\s", "", detail) in re.sub(r"\s", "", text)
    assert "SOURCE" in detail_column(200)[0]  # wide enough: every column in its own place


def test_help_shows_what_to_type_not_python_types(run) -> None:
    pages = [
        [], ["bots"], ["bots", "start"], ["bots", "ls"], ["bots", "show"], ["bots", "config"],
        ["bots", "stop"], ["bots", "logs"], ["users"], ["users", "create"], ["users", "limit"],
        ["events"], ["serve"], ["migrate"],
    ]  # fmt: skip
    text = {}
    for page in pages:
        shown = run(*page, "--help", COLUMNS="160")
        assert shown.exit_code == 0, shown.output
        assert not re.search(r"<(str|bool|int|float|path|list)", shown.stdout), shown.stdout
        text[" ".join(page)] = shown.stdout
    assert re.search(r"--url\s+URL\s", text[""])
    assert re.search(r"--help\s+Show this message", text[""])  # a flag: nothing to type
    assert re.search(r"--label\s+-l\s+KEY:VALUE\s", text["bots start"])
    assert re.search(r"--label\s+-l\s+KEY:VALUE\s", text["bots ls"])
    assert re.search(r"--label\s+-l\s+KEY:VALUE\s", text["bots stop"])
    assert re.search(r"--wait\s+Wait until active", text["bots start"])
    assert re.search(r"--timeout\s+SECONDS\s", text["bots start"])
    assert re.search(r"--replace\s+Send the whole config", text["bots config"])
    assert re.search(r"bots config \[OPTIONS\] \{ID\} \[KEY=VALUE\]\.\.\.", text["bots config"])

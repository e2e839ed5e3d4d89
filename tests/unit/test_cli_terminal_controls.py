"""A bot's text never drives the operator's terminal (issue 27, point 8): the CLI shows every
control character a bot put in its name, labels, reason, detail, report, command result or log
lines (ESC sequences, other C0/C1 controls, bidi overrides) instead of sending it on. The CLI runs
in process against a stand-in API (httpx.MockTransport: no socket) that answers hostile records.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from rich.text import Text
from typer.testing import CliRunner, Result

from botfleet.cli import output, transport
from botfleet.cli.commands.events import describe
from botfleet.cli.main import app
from botfleet.cli.sse import Event

CLEAR = "\x1b[2J\x1b[H"  # clear the screen, cursor home
TITLE = "\x1b]0;pwned\x07"  # set the window title (OSC, ended by BEL)
CSI_8BIT = "\x9b31m"  # a one-byte CSI (C1), read as ESC [ by some terminals
RTL = "\u202etxt.exe"  # a right-to-left override: shows `exe.txt`
HOSTILE = f"a{CLEAR}b{TITLE}c{CSI_8BIT}d{RTL}\x08\x7f\r"
#: No byte or character of these reaches a terminal from data.
ACTED_ON = ["\x1b", "\x07", "\x08", "\x7f", "\x9b", "\u202e", "\r"]

BOT_ID = "0190a0a0-0000-7000-8000-000000000b07"
BOT = {
    "id": BOT_ID,
    "name": HOSTILE,
    "bot": "demo",
    "status": "failed",
    "status_reason": HOSTILE,
    "attempt": 1,
    "labels": {"team": HOSTILE},
    "config": {"k": HOSTILE},
    "report": {"note": HOSTILE},
    "created_at": "2026-01-01T00:00:00Z",
}
TRANSITION = {
    "at": "2026-01-01T00:00:01Z",
    "from": "active",
    "to": "failed",
    "reason": HOSTILE,
    "source": HOSTILE,
    "attempt": 1,
    "detail": HOSTILE,
}
COMMAND = {"id": "cmd-1", "action": "echo", "status": "acked", "result": {"text": HOSTILE}}
LOG = f"first line{CLEAR}\n\tindented{TITLE}\nlast{RTL}\n"


def answer(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path == "/bots":
        return httpx.Response(200, json={"items": [BOT], "next_cursor": None})
    if path == f"/bots/{BOT_ID}":
        return httpx.Response(200, json=BOT)
    if path == f"/bots/{BOT_ID}/transitions":
        return httpx.Response(200, json={"items": [TRANSITION], "next_cursor": None})
    if path == f"/bots/{BOT_ID}/logs":
        return httpx.Response(200, text=LOG)
    if path == f"/bots/{BOT_ID}/commands":
        return httpx.Response(202, json={**COMMAND, "status": "pending"})
    if path == f"/bots/{BOT_ID}/commands/cmd-1":
        return httpx.Response(200, json=COMMAND)
    detail = {"code": "not_found", "message": f"no such thing {HOSTILE}"}
    return httpx.Response(404, json={"detail": detail})


@pytest.fixture(autouse=True)
def stand_in_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real_client = httpx.Client
    monkeypatch.setattr(transport, "USE_HTTPX", True)  # the stand-in is an httpx transport
    monkeypatch.setattr(
        httpx,
        "Client",
        lambda **kwargs: real_client(transport=httpx.MockTransport(answer), **kwargs),
    )
    monkeypatch.setattr(output, "console", output.new_console())
    monkeypatch.setattr(output, "err", output.new_console(stderr=True))
    yield


@pytest.fixture
def run(tmp_path: Path):
    runner = CliRunner()
    env = {
        "BOTFLEET_URL": "http://stand-in.invalid",
        "BOTFLEET_KEY": "bf_test",
        "BOTFLEET_CONFIG": str(tmp_path / "absent.toml"),
        "COLUMNS": "200",
    }

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    return invoke


def harmless(text: str) -> bool:
    return not any(char in text for char in ACTED_ON)


@pytest.mark.parametrize(
    "args",
    [
        ("bots", "ls"),
        ("bots", "show", BOT_ID),
        ("bots", "cmd", BOT_ID, "echo", "--wait"),
        ("bots", "show", "0190a0a0-0000-7000-8000-000000000404"),  # the error's message
    ],
)
def test_commands_show_a_bots_controls_instead_of_sending_them(run, args: tuple[str, ...]) -> None:
    result = run(*args)
    assert harmless(result.stdout) and harmless(result.stderr), repr(result.output)
    shown = result.stdout + result.stderr
    assert "^[[2J" in shown or "\\u001b[2J" in shown  # as `cat -v` shows it, or as JSON


def test_logs_keep_their_lines_and_tabs_and_show_the_rest() -> None:
    result = CliRunner().invoke(
        app,
        ["bots", "logs", BOT_ID],
        env={"BOTFLEET_URL": "http://stand-in.invalid", "BOTFLEET_KEY": "bf_test"},
    )
    assert result.exit_code == 0, result.output
    assert harmless(result.stdout), repr(result.stdout)
    assert result.stdout.splitlines() == [
        "first line^[[2J^[[H",
        "\tindented^[]0;pwned^G",
        "last\\u202etxt.exe",
    ]


def test_json_output_is_the_same_value_with_no_control_left_raw(run) -> None:
    result = run("bots", "show", BOT_ID, "--json")
    assert result.exit_code == 0, result.output
    assert harmless(result.stdout), repr(result.stdout)
    shown = json.loads(result.stdout)
    assert shown["name"] == HOSTILE and shown["report"] == {"note": HOSTILE}  # exact for scripts


def test_events_show_controls_in_every_kind_of_event() -> None:
    events = [
        Event(id="1", event="transition", data=json.dumps({**TRANSITION, "bot_id": BOT_ID})),
        Event(id="2", event="command", data=json.dumps({**COMMAND, "error": HOSTILE})),
        Event(id="3", event="report", data=json.dumps({"report": {"n": HOSTILE}})),
        Event(id="4", event=HOSTILE, data=HOSTILE),
        Event(id="5", event="transition", data=HOSTILE),  # not JSON
    ]
    for event in events:
        line = printed(describe(event))
        assert harmless(line) and "\n" not in line.rstrip("\n"), repr(line)


def test_every_table_and_the_consoles_own_guard() -> None:
    tables = [
        output.bots_table([BOT]),
        output.fields_table(BOT, list(BOT)),
        output.transitions_table([TRANSITION], width=80),
        output.transitions_table([TRANSITION], width=300),
        output.users_table(
            [{"id": HOSTILE, "name": HOSTILE, "max_concurrent_bots": 1, "created_at": None}]
        ),
        output.keys_table([{"id": HOSTILE, "prefix": HOSTILE, "name": HOSTILE, "scopes": []}]),
        output.audit_table([{"action": HOSTILE, "target": HOSTILE, "change": {"x": HOSTILE}}]),
    ]
    for table in tables:
        assert harmless(printed(table)), repr(printed(table))
    # A path that forgot `clean` (a raw Text, raw markup): the console itself shows the controls.
    for forgot in (Text(HOSTILE), f"[bold]{HOSTILE}[/]"):
        assert harmless(printed(forgot)) and "^[[2J" in printed(forgot), repr(printed(forgot))


def test_clean_keeps_ordinary_text_and_lines_only_where_asked() -> None:
    assert output.clean("plain ünïcode → 日本 [x]") == "plain ünïcode → 日本 [x]"
    assert output.clean("a\nb\tc") == "a^Jb^Ic"
    assert output.clean("a\nb\tc", multiline=True) == "a\nb\tc"
    assert output.clean("\x1b\x00\x7f\x85\u2066\u2028") == "^[^@^?\\u0085\\u2066\\u2028"
    # Cleaned before the markup is escaped: the `[` of `^[` cannot open a tag.
    assert printed(output.escape("\x1b[bold]x")) == "^[[bold]x\n"


def printed(renderable: object) -> str:
    """What the CLI's console writes for `renderable` (no terminal: no styling codes at all, so
    any control character in the output came from the data)."""
    file = io.StringIO()
    console = output.new_console()
    console.file = file
    assert isinstance(console, Console)
    console.print(renderable, soft_wrap=True)
    return file.getvalue()

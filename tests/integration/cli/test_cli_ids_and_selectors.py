"""Ids as the CLI shows them, taken back, and commands on several bots (issue 29, point 4 and 5):
every command about a bot takes its whole id, its short id (the last 8 characters, as `bots ls`
shows) or a unique prefix; `bots stop` and `bots rm` take several ids or a label selector, say
what became of each bot and exit non-zero when any failed. Against a real manager; the bots are
scheduled far ahead, so none runs (stopping one ends it at once)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from botfleet.cli import output
from botfleet.cli.main import app
from tests.support import Manager

UNSET = {"BOTFLEET_URL": None, "BOTFLEET_KEY": None, "BOTFLEET_ADMIN_TOKEN": None}
LATER = "2999-01-01T00:00:00Z"


@pytest.fixture(autouse=True)
def fresh_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Consoles made per run, wide enough that no line wraps (see test_cli.py)."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(output, "console", Console(highlight=False))
    monkeypatch.setattr(output, "err", Console(stderr=True, highlight=False))


@pytest.fixture
def run(tmp_path: Path, manager: Manager):
    """The CLI in process, as a fresh user of the manager (so selectors see only its bots)."""
    created, client = manager.new_user(max_bots=20)
    client.close()
    env = {
        **UNSET,
        "BOTFLEET_CONFIG": str(tmp_path / "absent.toml"),
        "BOTFLEET_URL": manager.url,
        "BOTFLEET_KEY": created["api_key"],
    }
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    return invoke


def start(run, *labels: str) -> str:
    started = run("bots", "start", "demo", "--start-at", LATER, *labels)
    assert started.exit_code == 0, started.output
    return str(started.stdout.strip())


def bot(run, bot_id: str) -> dict[str, Any]:
    shown = run("bots", "show", bot_id, "--json")
    assert shown.exit_code == 0, shown.output
    return dict(json.loads(shown.stdout))


def unique_prefix(bot_id: str, others: list[str]) -> str:
    """The shortest prefix (4 or more) of `bot_id` that no other id starts with."""
    return next(
        bot_id[:n] for n in range(4, 37) if not any(o.startswith(bot_id[:n]) for o in others)
    )


def test_short_ids_and_prefixes_are_taken_back(run) -> None:
    first, second = start(run), start(run)
    listed = run("bots", "ls")
    assert first[-8:] in listed.stdout and second[-8:] in listed.stdout

    # The short id `ls` shows, in any case, a unique prefix and the whole id: the same bot.
    for typed in (first[-8:], first[-8:].upper(), unique_prefix(first, [second]), first):
        assert bot(run, typed)["id"] == first, typed
    logs = run("bots", "logs", second[-8:])
    assert logs.exit_code == 0, logs.output

    # Bots made the same minute share their first characters: a prefix both have is refused,
    # naming each (short id, status) so that one can be typed instead.
    shared = first[:4]
    ambiguous = run("bots", "show", shared)
    assert ambiguous.exit_code == 2, ambiguous.output
    assert ambiguous.stderr.startswith(f"error: ambiguous_id: '{shared}' matches 2 bots")
    lines = ambiguous.stderr.splitlines()[1:]
    assert sorted(line.split()[0] for line in lines) == sorted([first[-8:], second[-8:]])
    assert all("requested" in line for line in lines)
    assert ambiguous.stdout == ""

    missing = run("bots", "show", "0123456789ab")
    assert missing.exit_code == 3 and missing.stderr.startswith("error: bot_not_found: no bot")

    # One id stops and relaunches as it always did: the answer, or the error and its code.
    stopped = run("bots", "stop", first[-8:])
    assert stopped.exit_code == 0 and stopped.stdout.split()[0] == first, stopped.output
    relaunched = run("bots", "relaunch", first[-8:])
    assert relaunched.exit_code == 0, relaunched.output
    assert bot(run, relaunched.stdout.strip())["relaunch_of"] == first
    assert run("bots", "stop", shared).exit_code == 2  # three bots now: still ambiguous
    for bot_id in (second, relaunched.stdout.strip()):
        assert run("bots", "stop", bot_id).exit_code == 0


def test_stop_several_ids_says_what_became_of_each(run) -> None:
    ids = [start(run) for _ in range(3)]
    # A short id, a prefix and a whole id; one bot named twice is stopped once.
    typed = [ids[0][-8:], unique_prefix(ids[1], [ids[0], ids[2]]), ids[2], ids[2][-8:]]
    stopped = run("bots", "stop", *typed)
    assert stopped.exit_code == 0, stopped.output
    assert [line.split()[0] for line in stopped.stdout.splitlines()] == ids
    assert stopped.stderr.strip() == "stopped 3 of 3 bots"
    assert {bot(run, i)["status"] for i in ids} == {"completed"}

    # Stopping is idempotent; a piece that names no bot fails alone, and the exit says so.
    again = run("bots", "stop", ids[0], "0123456789ab", ids[1], "--json")
    assert again.exit_code == 3, again.output
    answers = json.loads(again.stdout)
    assert [a["id"] for a in answers] == [ids[0], "0123456789ab", ids[1]]
    assert answers[1]["error"]["code"] == "bot_not_found"
    assert [a["status"] for a in (answers[0], answers[2])] == ["completed", "completed"]
    assert "error: 0123456789ab: bot_not_found:" in again.stderr
    assert again.stderr.rstrip().endswith("stopped 2 of 3 bots, 1 failed")


def test_stop_by_label_selector(run) -> None:
    team = f"t{uuid.uuid4().hex[:8]}"
    ours = [start(run, "-l", f"team:{team}", "-l", "tier:web") for _ in range(3)]
    other_tier = start(run, "-l", f"team:{team}", "-l", "tier:db")
    other_team = start(run, "-l", "team:elsewhere", "-l", "tier:web")

    # Several bots match: a script must say --yes; nothing is stopped until it does.
    asked = run("bots", "stop", "--label", f"team:{team}", "--label", "tier:web")
    assert asked.exit_code == 2, asked.output
    assert f"error: 3 bots have team:{team} tier:web: add --yes to stop them all" in asked.stderr
    assert all(i[-8:] in asked.stderr for i in ours)  # the bots it would stop
    assert {bot(run, i)["status"] for i in ours} == {"requested"}

    stopped = run("bots", "stop", "-l", f"team:{team}", "-l", "tier:web", "--yes", "--wait")
    assert stopped.exit_code == 0, stopped.output
    assert sorted(line.split()[0] for line in stopped.stdout.splitlines()) == sorted(ours)
    assert all(line.split()[1] == "completed" for line in stopped.stdout.splitlines())
    assert stopped.stderr.strip() == "stopped 3 of 3 bots"
    assert bot(run, other_tier)["status"] == bot(run, other_team)["status"] == "requested"

    # Only live bots are selected: now none is, and there is nothing to do.
    again = run("bots", "stop", "-l", f"team:{team}", "-l", "tier:web")
    assert again.exit_code == 0 and again.stdout == "", again.output
    assert "nothing to stop" in again.stderr
    # One match needs no --yes; ids and a selector do not mix.
    alone = run("bots", "stop", "-l", f"team:{team}", "-l", "tier:db", "--json")
    assert alone.exit_code == 0 and [b["id"] for b in json.loads(alone.stdout)] == [other_tier]
    mixed = run("bots", "stop", other_team, "-l", f"team:{team}")
    assert mixed.exit_code == 2 and "not both" in mixed.stderr
    assert run("bots", "stop", other_team).exit_code == 0


def test_rm_several_ids_or_by_label(run) -> None:
    team = f"t{uuid.uuid4().hex[:8]}"
    ended = [start(run, "-l", f"team:{team}") for _ in range(4)]
    live = start(run, "-l", f"team:{team}")
    assert run("bots", "stop", *ended).exit_code == 0

    removed = run("bots", "rm", ended[0][-8:], ended[1])
    assert removed.exit_code == 0, removed.output
    assert removed.stdout.splitlines() == [f"{ended[0]} deleted", f"{ended[1]} deleted"]
    assert removed.stderr.strip() == "deleted 2 of 2 bots"
    assert run("bots", "show", ended[0]).exit_code == 3

    # A live bot among them is refused (stop it first), the others deleted; exit 4 (conflict).
    mixed = run("bots", "rm", ended[2], live[-8:])
    assert mixed.exit_code == 4, mixed.output
    assert mixed.stdout.splitlines() == [f"{ended[2]} deleted"]
    assert f"error: {live[-8:]}: bot_live:" in mixed.stderr
    assert mixed.stderr.rstrip().endswith("deleted 1 of 2 bots, 1 failed")

    # A selector deletes the ended bots with the labels, never a live one.
    selected = run("bots", "rm", "--label", f"team:{team}", "--yes")
    assert selected.exit_code == 0, selected.output
    assert selected.stdout.splitlines() == [f"{ended[3]} deleted"]
    assert bot(run, live)["status"] == "requested"
    assert run("bots", "stop", live).exit_code == 0
    assert run("bots", "rm", live).stdout.strip() == f"{live} deleted"  # one id: as always

"""The tutorial (docs/tutorial.md) runs as written: `make run`, its printed exports, then every
block (the file keeps its old name: the walk began in the README).

The tutorial marks the blocks a new user pastes with `<!-- walk -->`. This test starts `make run`
on a fresh data folder (SQLite, the embedded Redis, the process backend: the embedded default),
pastes the `export` lines it printed into one bash, then runs each tutorial line in order, waiting
between lines as a person would (until no bot is on its way somewhere and no command is in
flight). A line fails the test when it exits non-zero; curl is made to fail on HTTP errors.
Lines that follow forever (`--watch`, `-f`, `botfleet events`) run for a few seconds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.doc_shell import Shell
from tests.support import (
    REPO,
    detached,
    kill_leftover_bots,
    unassigned_port,
    user_env,
    wait_until,
)

MARK = "<!-- walk -->"
FOLLOWING = re.compile(r"(--watch\b|\s-f\b|\bbotfleet events\b|[?&]follow=1\b)")
TRANSIENT_BOTS = {"requested", "starting", "stopping"}
TRANSIENT_COMMANDS = {"pending", "delivered"}


def walk_lines(page: str) -> list[str]:
    """The commands of every block marked `<!-- walk -->`, continuation lines joined."""
    commands: list[str] = []
    for block in re.findall(re.escape(MARK) + r"\s*```bash\n(.*?)```", page, re.S):
        pending = ""
        for raw in block.splitlines():
            line = pending + raw
            if line.rstrip().endswith("\\"):
                pending = line.rstrip()[:-1] + " "
                continue
            pending = ""
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
    return commands


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """`make run` on a fresh data folder; yields the exports it printed, and its output file.

    `make run` is run as written, so its manager binds BOTFLEET_PORT by itself: a port from
    `unassigned_port` (outside the kernel's ephemeral range), and another one if that bind fails.
    """
    data_dir = tmp_path / "data"
    out = tmp_path / "make-run.out"
    try:
        for _ in range(3):
            port = str(unassigned_port())
            env = user_env(
                BOTFLEET_DATA_DIR=str(data_dir),
                BOTFLEET_PORT=port,
                BOTFLEET_CALLBACK_PORT="0",  # a free port the manager binds itself
                HOME=str(tmp_path),
            )
            with detached(["make", "--no-print-directory", "run"], env=env, log=out) as proc:
                exports = wait_until(
                    lambda proc=proc: _exports(out.read_text()) if proc.poll() is None else "ended",
                    timeout=120,
                    what=f"make run to print its exports ({out})",
                )
                up = exports != "ended" and wait_until(
                    lambda proc=proc, exports=exports: (
                        "ended" if proc.poll() is not None else _healthy(exports["BOTFLEET_URL"])
                    ),
                    timeout=60,
                    what="the manager",
                )
                if up is True:
                    yield exports, out
                    return
            assert "address already in use" in out.read_text(), out.read_text()
        raise AssertionError(f"make run found no free port: {out.read_text()}")
    finally:
        kill_leftover_bots(data_dir)


def _exports(text: str) -> dict[str, str]:
    found = dict(re.findall(r"\b(BOTFLEET_[A-Z_]+)=(\S+)", text))
    path = re.search(r'export PATH="([^"]+):\$PATH"', text)
    if path:
        found["PATH_PREFIX"] = path.group(1)
    return found if {"BOTFLEET_URL", "BOTFLEET_KEY", "BOTFLEET_ADMIN_TOKEN"} <= found.keys() else {}


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def settle(client: httpx.Client) -> None:
    """Wait as a person reading the output would: until nothing is on its way."""

    def quiet() -> bool:
        bots = client.get("/bots", params={"limit": 100}).json()["items"]
        if any(bot["status"] in TRANSIENT_BOTS for bot in bots):
            return False
        for bot in bots:
            if bot["status"] == "active":
                commands = client.get(f"/bots/{bot['id']}/commands").json()
                items = commands["items"] if isinstance(commands, dict) else commands
                if any(c["status"] in TRANSIENT_COMMANDS for c in items):
                    return False
        return True

    wait_until(quiet, timeout=60, interval=0.2, what="the walk's bots to settle")


def test_the_tutorial_runs_as_written(make_run: tuple[dict[str, str], Path]) -> None:
    exports, make_output = make_run
    lines = walk_lines((REPO / "docs" / "tutorial.md").read_text())
    assert any(line.startswith("curl") for line in lines), "the tutorial lost its curl walk"
    assert any(line.startswith("botfleet") for line in lines), "the tutorial lost its CLI walk"
    assert "PATH_PREFIX" in exports or os.access(REPO / ".venv/bin/botfleet", os.X_OK)

    env = user_env(HOME=str(make_output.parent))
    shell = Shell(env, REPO)
    client = httpx.Client(
        base_url=exports["BOTFLEET_URL"],
        headers={"Authorization": f"Bearer {exports['BOTFLEET_KEY']}"},
        timeout=30,
    )
    try:
        # What a user pastes from `make run`'s output, as printed.
        for line in make_output.read_text().splitlines():
            if line.strip().startswith("export "):
                status, output = shell.run(line.strip())
                assert status == 0, f"{line}\n{output}"
        # curl fails on an HTTP error status, still printing the body.
        shell.run('curl() { command curl --fail-with-body "$@"; }')
        for line in lines:
            following = bool(FOLLOWING.search(line))
            status, output = shell.run(f"timeout 3 {line}" if following else line)
            ok = status in (0, 124) if following else status == 0
            assert ok, f"tutorial line failed (exit {status}):\n$ {line}\n{output}"
            settle(client)
        bots = client.get("/bots", params={"limit": 100}).json()["items"]
        assert bots, "the walk started no bot"
        assert all(bot["status"] == "completed" for bot in bots), [
            (bot["name"], bot["status"], bot["status_reason"]) for bot in bots
        ]
    finally:
        client.close()
        shell.close()

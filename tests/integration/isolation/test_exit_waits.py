"""A bot's record says `completed` only once none of its processes remain (issue 27, item 8).

The runtime's `exited` is kept on the attempt and the bot ends once the engine confirms its
workload is gone (manager/background/exit_watch.py). On main d8e19e2 a bot that started a setsid
child and exited 0 read `completed` at once while the child lived on, until the reconciler's
orphan pass stopped it. Both tests run a real manager (process backend) whose reconciler ticks
once a minute, so only the exit watch can end a bot within them; each is bounded (a `sleep`
child, 30-60 s waits).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from botfleet.orchestrators.process.cgroups import detect
from tests.support import (
    REPO,
    Manager,
    RedisServer,
    figure,
    running_manager,
    transitions,
    wait_for_status,
    wait_until,
)

CGROUPS = detect(None, Path("/nonexistent-botfleet-probe"))
STOP_GRACE_S, KILL_AFTER_S = 2.0, 1.0  # the exit grace: 3 s after the report


def _alive(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2 :].split()[0] not in "ZX"


@pytest.fixture
def manager(tmp_path: Path, redis_server: RedisServer) -> Iterator[Manager]:
    env = {
        "BOTFLEET_ALLOWED_BOT_MODULES": '["tests.bots.escaper"]',
        "PYTHONPATH": str(REPO),
        "BOTFLEET_STOP_GRACE_S": str(STOP_GRACE_S),
        "BOTFLEET_KILL_AFTER_S": str(KILL_AFTER_S),
        # No reconciler pass within a test: what ends a bot here is the exit watch.
        "BOTFLEET_RECONCILE_INTERVAL_S": "120",
    }
    with running_manager(tmp_path, redis_server.url, extra_env=env) as instance:
        yield instance


@pytest.mark.skipif(
    os.geteuid() != 0 or isinstance(CGROUPS, str),
    reason=f"needs root and a cgroup v2 subtree or writable v1 hierarchies: {CGROUPS}",
)
def test_a_bot_that_leaves_a_child_reads_completed_only_once_the_child_is_gone(
    manager: Manager,
) -> None:
    """The bot starts a setsid child and exits 0 on its own: while the child lives its record
    stays `active`; after the exit grace the child is killed (the whole cgroup), and only then
    does it read `completed`, through the contract's `active → completed` (`finished`)."""
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "tests.bots.escaper:EscaperBot", "config": {}})
    assert bot.status_code == 201, bot.text
    bot_id = bot.json()["id"]

    def escaped() -> int | None:
        found = re.search(r"ESCAPED (\d+)", client.get(f"/bots/{bot_id}/logs").text)
        return int(found.group(1)) if found else None

    child = wait_until(escaped, timeout=60, what="the escaped child's pid")
    ref = wait_until(lambda: client.get(f"/bots/{bot_id}").json()["runtime_ref"], timeout=30)
    main = int(ref.split("-")[0])
    # The runtime exits only once the manager has answered its `exited`: the report is stored.
    wait_until(lambda: not _alive(main), timeout=30, interval=0.02, what="the main process")
    main_gone = time.monotonic()
    seen = client.get(f"/bots/{bot_id}").json()
    assert _alive(child), "the child outlives the bot's report by the exit grace"
    assert seen["status"] == "active", seen  # the child lived all through that read

    ended = wait_for_status(client, bot_id, {"completed", "failed"}, timeout=30)
    assert not _alive(child), "the record said completed while the child lived"
    waited = time.monotonic() - main_gone
    figure("escaped child: bot's exit → `completed` (process, exit grace 3 s)", waited)
    assert waited >= STOP_GRACE_S, waited  # a kill after the exit grace, not before
    assert (ended["status"], ended["status_reason"], ended["exit_code"]) == (
        "completed",
        "finished",
        0,
    )
    assert transitions(client, bot_id)[-1] == ("active", "completed", "finished", "runtime")


def test_a_stopped_bot_reads_completed_as_soon_as_its_process_is_gone(manager: Manager) -> None:
    """A plain stop: the bot leaves and exits 0; its workload is gone a moment after its
    report, and the exit watch ends it then, not a reconciler pass later."""
    _, client = manager.new_user()
    bot_id = client.post("/bots", json={"bot": "demo", "config": {}}).json()["id"]
    main = int(wait_for_status(client, bot_id, {"active"}, timeout=60)["runtime_ref"].split("-")[0])
    asked = time.monotonic()
    assert client.post(f"/bots/{bot_id}/stop").status_code == 202
    ended = wait_for_status(client, bot_id, {"completed", "failed"}, timeout=30)
    took = time.monotonic() - asked
    figure("stop → `completed` (process, reconciler idle)", took)
    assert not _alive(main)
    assert (ended["status"], ended["status_reason"], ended["exit_code"]) == ("completed", "left", 0)
    assert transitions(client, bot_id)[-2:] == [
        ("active", "stopping", "stop_requested", "api"),
        ("stopping", "completed", "left", "runtime"),
    ]
    assert took < 10, took

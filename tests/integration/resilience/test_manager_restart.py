"""A manager restart must not touch running bots, and they stay controllable afterwards."""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    Manager,
    RedisServer,
    running_manager,
    transitions,
    wait_for_command,
    wait_for_status,
    wait_until,
)


@pytest.fixture
def restartable(tmp_path: Path, redis_server: RedisServer) -> Iterator[Manager]:
    with running_manager(tmp_path, redis_server.url, start=False) as instance:
        yield instance


def bot_log(manager: Manager, bot_id: str, *, lines: int = 30) -> str:
    text = (manager.data_dir / "logs" / f"{bot_id}.log").read_text()
    return "\n".join(text.splitlines()[-lines:])


def unread_output(manager: Manager, bot_id: str) -> int:
    """Bytes the bot wrote that no manager read yet (FIONREAD on its pipes: nothing consumed)."""
    pending = 0
    for pipe in (manager.data_dir / "log-pipes").glob(f"{bot_id}~*.fifo"):
        fd = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
        try:
            pending += struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
        finally:
            os.close(fd)
    return pending


def pid_alive(runtime_ref: str) -> bool:
    """Running, and not a zombie waiting for a parent to reap it."""
    try:
        stat = Path(f"/proc/{runtime_ref.split('-')[0]}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["graceful", "killed"])
def test_bots_survive_a_manager_restart(restartable: Manager, how: signal.Signals) -> None:
    restartable.start()
    _, client = restartable.new_user()
    ids = [client.post("/bots", json={"bot": "demo", "config": {}}).json()["id"] for _ in range(3)]
    refs = [wait_for_status(client, bot_id, {"active"})["runtime_ref"] for bot_id in ids]

    logged = {bot_id: len(bot_log(restartable, bot_id, lines=10_000)) for bot_id in ids}
    restartable.stop(how)
    # Each bot heartbeats on into the void after the stop: it says so (retrying, giving up)
    # into its output pipe, which waits for the next manager (process/log_pipes.py).
    for bot_id in ids:
        wait_until(
            lambda bot_id=bot_id: unread_output(restartable, bot_id),
            timeout=30,
            what=f"bot {bot_id} to heartbeat after its manager stopped",
        )
    assert all(pid_alive(ref) for ref in refs), "bots must outlive their manager"
    restartable.start()
    for bot_id in ids:  # the new manager took the pipes over: what they held is in the logs
        wait_until(
            lambda bot_id=bot_id: (
                "heartbeat callback" in bot_log(restartable, bot_id, lines=10_000)[logged[bot_id] :]
            ),
            timeout=30,
            what=f"bot {bot_id}'s output of the pause in its log",
        )

    # A full heartbeat budget after the new lead: the bots reconnected and kept heartbeating.
    restartable.judged_a_heartbeat_budget_after_leading()
    for bot_id in ids:
        bot = client.get(f"/bots/{bot_id}").json()
        assert bot["status"] == "active", (
            bot,
            transitions(client, bot_id),
            bot_log(restartable, bot_id),
        )

    command = client.patch(f"/bots/{ids[0]}/config", json={"config": {"after": "restart"}}).json()
    assert wait_for_command(client, ids[0], command["id"], {"acked", "failed"})["status"] == "acked"
    for bot_id in ids:
        assert client.post(f"/bots/{bot_id}/stop").status_code == 202
    for bot_id in ids:
        done = wait_for_status(client, bot_id, {"completed", "failed"})
        assert done["status"] == "completed" and done["exit_code"] == 0
    wait_until(lambda: not any(pid_alive(ref) for ref in refs), timeout=10, what="bots gone")

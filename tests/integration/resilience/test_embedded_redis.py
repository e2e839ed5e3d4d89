"""Issue 27, point 8: the embedded Redis (`make run`'s default) lives and dies with its manager.

- a SIGKILLed manager takes its redis-server with it (it used to be left running, and the next
  manager adopted it);
- a redis-server that dies is started again, on the same port with the same password, with the
  ACL users of the live bots, and a running bot takes its commands over Redis again;
- a listener on the embedded Redis port that the manager did not start refuses the start, even a
  redis-server that knows the manager's password (what an older manager left behind).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from botfleet.manager.messaging.bot_acl import username
from botfleet.runtime.protocol import command_channel
from tests.support import (
    Manager,
    running_manager,
    unassigned_port,
    wait_for_command,
    wait_for_status,
    wait_until,
)


class EmbeddedManager(Manager):
    """A manager on the embedded Redis: no BOTFLEET_REDIS_URL."""

    def env(self) -> dict[str, str]:
        env = super().env()
        del env["BOTFLEET_REDIS_URL"]
        return env


@contextlib.contextmanager
def embedded_manager(root: Path) -> Iterator[EmbeddedManager]:
    """A manager (not started) whose embedded Redis port is one no connection can be given
    (`unassigned_port`, the documented exception for redis-server, which binds by itself)."""
    with running_manager(root, "", start=False) as plain:
        manager = EmbeddedManager(
            data_dir=plain.data_dir, database_url=plain.database_url, redis_url="", hold=plain.hold
        )
        redis_dir = manager.data_dir / "redis"
        redis_dir.mkdir(parents=True, mode=0o700)
        (redis_dir / "port").write_text(str(unassigned_port()))
        try:
            yield manager
        finally:
            manager.stop()


def admin_client(manager: Manager) -> redis.Redis:
    redis_dir = manager.data_dir / "redis"
    return redis.Redis(
        port=int((redis_dir / "port").read_text()),
        password=(redis_dir / "password").read_text().strip(),
        socket_timeout=5,
        socket_connect_timeout=1,
        decode_responses=True,
    )


def server_pid(client: redis.Redis) -> int | None:
    try:
        return int(client.info("server")["process_id"])
    except redis.RedisError:
        return None


def running(pid: int) -> bool:
    """Running, and not a zombie waiting for a parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_sigkilled_manager_takes_its_redis_server_with_it(tmp_path: Path) -> None:
    with embedded_manager(tmp_path) as manager:
        manager.start()
        client = admin_client(manager)
        pid = server_pid(client)
        client.close()
        assert pid is not None and running(pid)
        try:
            manager.stop(signal.SIGKILL)
            wait_until(lambda: not running(pid), timeout=15, what="the redis-server to end")
        finally:
            if running(pid):  # the old behaviour: do not leave it behind
                os.kill(pid, signal.SIGKILL)


def test_a_redis_server_that_dies_is_restarted_and_bots_hear_commands_again(
    tmp_path: Path,
) -> None:
    with embedded_manager(tmp_path) as manager:
        manager.start()
        _, owner = manager.new_user()
        created = owner.post("/bots", json={"bot": "demo", "config": {}})
        assert created.status_code == 201, created.text
        bot_id = created.json()["id"]
        wait_for_status(owner, bot_id, {"active"})
        channel = command_channel(bot_id)
        client = admin_client(manager)

        def subscribed() -> bool:
            try:
                return dict(client.pubsub_numsub(channel)).get(channel) == 1
            except redis.RedisError:
                return False

        wait_until(subscribed, timeout=30, what="the bot to subscribe to its channel")
        first = server_pid(client)
        assert first is not None
        os.kill(first, signal.SIGKILL)

        def restarted() -> bool:
            pid = server_pid(client)
            return pid is not None and pid != first

        wait_until(restarted, timeout=30, what="a new embedded redis-server")
        # The bot's user was written again, and the bot is back on its channel with it.
        wait_until(
            lambda: username(bot_id) in client.acl_users(), timeout=30, what="the bot's user"
        )
        wait_until(subscribed, timeout=60, what="the bot to subscribe again")
        change = owner.patch(f"/bots/{bot_id}/config", json={"config": {"after": "restart"}})
        assert change.status_code == 202, change.text
        done = wait_for_command(owner, bot_id, change.json()["id"], {"acked", "failed"})
        assert done["status"] == "acked", done
        client.close()
        owner.post(f"/bots/{bot_id}/stop")
        wait_for_status(owner, bot_id, {"completed", "failed"}, timeout=30)


@pytest.fixture
def leftover_redis(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A redis-server on a port of its own, knowing a password: what an older manager left."""
    port, password = unassigned_port(), "leftover-password"
    command = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    command += ["--appendonly", "no", "--requirepass", password, "--dir", str(tmp_path)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port, password=password, socket_connect_timeout=1)

    def answers() -> bool:
        assert proc.poll() is None, "the leftover redis-server could not start"
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_until(answers, timeout=15, what="the leftover redis-server")
        yield port, password
        assert proc.poll() is None and client.ping(), "the manager must leave it alone"
    finally:
        client.close()
        proc.kill()
        proc.wait(10)


def test_a_listener_the_manager_did_not_start_is_refused(
    tmp_path: Path, leftover_redis: tuple[int, str]
) -> None:
    port, password = leftover_redis
    with embedded_manager(tmp_path) as manager:
        redis_dir = manager.data_dir / "redis"
        (redis_dir / "port").write_text(str(port))
        (redis_dir / "password").write_text(password + "\n")
        with pytest.raises(AssertionError, match="manager exited"):
            manager.start()  # raises once the process has exited
        assert manager.proc is not None
        assert manager.proc.wait(30) != 0
        log = manager.log_path.read_text()
        assert f"something already listens on 127.0.0.1:{port}" in log, manager.log_tail()
        assert "this manager did not start it" in log

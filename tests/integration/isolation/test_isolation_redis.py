"""Issue 14, Redis: a bot reaches its own command channel and nothing else.

Bot A is hostile: its code (a `demo` bot that also prints the Redis URL its runtime holds, as any
bot's code can) hands its credentials to this test, which then attacks bot B of another user
with them. Every attack must be refused by Redis, and B must neither leave nor see a command.
A message forged with the manager's own (admin) Redis credentials, as on a Redis without
per-bot users, must be dropped by B's runtime: it lacks the manager's signature.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
import redis

from botfleet.manager.messaging.bot_acl import USER_PREFIX, username
from botfleet.runtime.protocol import CommandMessage, command_channel, signed_json, signing_key
from tests.support import (
    Manager,
    PortHold,
    RedisServer,
    detached,
    running_manager,
    user_env,
    wait_for_command,
    wait_for_status,
    wait_until,
)

# --- signed commands (runtime/protocol.py) --------------------------------------------


# --- the bot's Redis user (manager/messaging/bot_acl.py) ------------------------------------------


# --- the attack, end to end ---------------------------------------------------------------

THIEF_MODULE = "botfleet_redis_thief"
THIEF = '''
"""A hostile bot: a demo bot that prints the Redis URL its runtime was handed."""
import gc

from botfleet.runtime.bots.demo import DemoBot
from botfleet.runtime.env import RuntimeEnv


class Thief(DemoBot):
    async def on_start(self):
        await super().on_start()
        env = next(o for o in gc.get_objects() if isinstance(o, RuntimeEnv))
        print("STOLEN-REDIS-URL " + env.redis_url, flush=True)
'''


@pytest.fixture(scope="module")
def thief_path() -> Iterator[str]:
    """A folder with the hostile module, readable by a bot running under a uid of its own."""
    folder = tempfile.mkdtemp(prefix="botfleet-thief-", dir="/tmp")
    os.chmod(folder, 0o755)
    module = Path(folder) / f"{THIEF_MODULE}.py"
    module.write_text(THIEF)
    module.chmod(0o644)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _env(thief_path: str, **extra: str) -> dict[str, str]:
    return {
        "PYTHONPATH": thief_path,
        "BOTFLEET_ALLOWED_BOT_MODULES": json.dumps([THIEF_MODULE]),
        **extra,
    }


@pytest.fixture(scope="module")
def isolated(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, thief_path: str
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("isolation-redis")
    with running_manager(root, redis_server.url, extra_env=_env(thief_path)) as instance:
        yield instance


def _stolen_url(client: httpx.Client, bot_id: str) -> str:
    def printed() -> str | None:
        text = client.get(f"/bots/{bot_id}/logs", params={"tail": 200}).text
        match = re.search(r"STOLEN-REDIS-URL (\S+)", text)
        return match.group(1) if match else None

    return str(wait_until(printed, timeout=30, what="the thief's loot"))


def _start_pair(manager: Manager) -> tuple[httpx.Client, str, httpx.Client, str]:
    """Bot A (the thief) of one user, bot B (a plain demo bot) of another, both active."""
    _, alice = manager.new_user()
    _, bob = manager.new_user()
    a = alice.post("/bots", json={"bot": f"{THIEF_MODULE}:Thief", "config": {}})
    assert a.status_code == 201, a.text
    b = bob.post("/bots", json={"bot": "demo", "config": {}})
    assert b.status_code == 201, b.text
    a_id, b_id = a.json()["id"], b.json()["id"]
    wait_for_status(alice, a_id, {"active"})
    wait_for_status(bob, b_id, {"active"})
    return alice, a_id, bob, b_id


def _refused(url: str, *command: Any) -> bool:
    """True when Redis refuses `command` to this user with NOPERM."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.execute_command(*command)
    except redis.exceptions.NoPermissionError:
        return True
    finally:
        client.close()
    return False


def _listening(admin: redis.Redis, channel: str) -> int:
    return int(admin.pubsub_numsub(channel)[0][1])


def _genuine_command_acked(owner: httpx.Client, bot_id: str) -> str:
    """A reconfigure the manager signs, sent after the forgeries and acked: the bot handles its
    channel's messages in order, so a forged `leave` applied would have refused it."""
    change = owner.patch(f"/bots/{bot_id}/config", json={"config": {"after": "forgeries"}})
    assert change.status_code == 202, change.text
    done = wait_for_command(owner, bot_id, change.json()["id"], {"acked", "failed"})
    assert done["status"] == "acked", done
    return str(done["id"])


def _b_log(bob: httpx.Client, b_id: str) -> str:
    return bob.get(f"/bots/{b_id}/logs", params={"tail": 500}).text


def test_a_bot_holding_its_credentials_cannot_reach_another_bot(
    isolated: Manager, redis_server: RedisServer
) -> None:
    alice, a_id, bob, b_id = _start_pair(isolated)
    a_url = _stolen_url(alice, a_id)
    parts = urlsplit(a_url)
    assert unquote(parts.username or "") == f"{USER_PREFIX}{a_id}"
    assert redis_server.password not in a_url, "a bot never holds the manager's password"
    b_channel, a_channel = command_channel(b_id), command_channel(a_id)
    admin = redis.Redis.from_url(redis_server.url)
    assert _listening(admin, b_channel) == 1, "B listens on its channel"

    # Every attack from A's credentials is refused by Redis.
    leave = json.dumps({"id": "x", "action": "leave", "issued_at": ""})
    assert _refused(a_url, "PUBLISH", b_channel, leave)
    assert _refused(a_url, "PUBLISH", a_channel, leave)
    assert _refused(a_url, "PSUBSCRIBE", "bot_commands:*")
    assert _refused(a_url, "SUBSCRIBE", b_channel)
    assert _refused(a_url, "KEYS", "*")
    assert _refused(a_url, "PUBSUB", "CHANNELS", "bot_commands:*")
    assert _refused(a_url, "ACL", "SETUSER", f"{USER_PREFIX}{a_id}", "+@all", "allchannels")
    # What a bot needs works: PING, and SUBSCRIBE to its own channel.
    own = redis.Redis.from_url(a_url, socket_timeout=5)
    assert own.ping()
    listener = own.pubsub()
    listener.subscribe(a_channel)
    confirmed = listener.get_message(timeout=5)
    assert confirmed is not None and confirmed["type"] == "subscribe", confirmed
    # The same attacks with the manager's credentials would have worked (what bots had before).
    assert not _refused(redis_server.url, "PUBSUB", "CHANNELS", "bot_commands:*")

    # A leave forged with the manager's own credentials but not its signature reaches B, which
    # drops it: unsigned, signed with A's key (A knows its own token), or with a made-up key.
    forged = CommandMessage(id="forged-1", action="leave", issued_at="")
    stolen_token = unquote(parts.password or "")
    for raw in (
        forged.to_json(),
        signed_json(forged, signing_key(stolen_token)),
        json.dumps(forged.to_dict() | {"sig": "0" * 64}),
    ):
        assert admin.publish(b_channel, raw) == 1, "B received the forgery"
    wait_until(
        lambda: _b_log(bob, b_id).count("missing or wrong signature") >= 3,
        timeout=15,
        what="B to drop the three forgeries",
    )
    later = _genuine_command_acked(bob, b_id)  # B reads its channel in order: after the forgeries
    assert bob.get(f"/bots/{b_id}").json()["status"] == "active"
    commands = bob.get(f"/bots/{b_id}/commands").json()["items"]
    assert [c["id"] for c in commands] == [later], "B has no new command but ours"
    assert "forged-1" not in _b_log(bob, b_id)

    # A real stop still works, over the same channel.
    stop = bob.post(f"/bots/{b_id}/stop")
    assert stop.status_code == 202, stop.text
    done = wait_for_status(bob, b_id, {"completed", "failed"}, timeout=30)
    assert (done["status"], done["exit_code"]) == ("completed", 0)
    leave_cmd = bob.get(f"/bots/{b_id}/commands").json()["items"][0]
    assert wait_for_command(bob, b_id, leave_cmd["id"], {"acked"})["status"] == "acked"

    # Once A ends, its credentials open nothing, and its open connection is gone.
    assert alice.post(f"/bots/{a_id}/stop").status_code == 202
    wait_for_status(alice, a_id, {"completed", "failed"}, timeout=30)

    def refused_auth() -> bool:
        try:
            redis.Redis.from_url(a_url, socket_timeout=5).ping()
        except redis.exceptions.AuthenticationError:
            return True
        return False

    wait_until(refused_auth, timeout=15, what="A's credentials to be refused")
    with pytest.raises(redis.exceptions.ConnectionError):
        for _ in range(3):
            listener.get_message(timeout=1)
    listener.close()
    own.close()
    admin.close()


def test_users_come_back_after_redis_forgot_them(
    isolated: Manager, redis_server: RedisServer
) -> None:
    """A restarted Redis has no ACL users: housekeeping writes them again (and only those of
    live bots); a user that is not this fleet's is never deleted."""
    _, alice = isolated.new_user()
    bot_id = alice.post("/bots", json={"bot": "demo", "config": {}}).json()["id"]
    wait_for_status(alice, bot_id, {"active"})
    admin = redis.Redis.from_url(redis_server.url, decode_responses=True)
    stranger = f"{USER_PREFIX}another-fleets-bot"
    admin.execute_command("ACL", "SETUSER", stranger, "on", ">pw", "-@all")
    try:
        admin.execute_command("ACL", "DELUSER", username(bot_id))  # what a restart does
        wait_until(
            lambda: username(bot_id) in admin.execute_command("ACL", "USERS"),
            timeout=15,
            what="housekeeping to write the user again",
        )
        # The bot reconnects with its own credentials and still takes commands over Redis.
        wait_until(lambda: _listening(admin, command_channel(bot_id)) == 1, timeout=40)
        change = alice.patch(f"/bots/{bot_id}/config", json={"config": {"x": 1}})
        assert wait_for_command(alice, bot_id, change.json()["id"], {"acked"})["status"] == "acked"
        assert alice.post(f"/bots/{bot_id}/stop").status_code == 202
        wait_for_status(alice, bot_id, {"completed"})
        wait_until(
            lambda: username(bot_id) not in admin.execute_command("ACL", "USERS"),
            timeout=15,
            what="the ended bot's user to be deleted",
        )
        isolated.loop_runs("housekeeping")  # it converges the users: not this one
        assert stranger in admin.execute_command("ACL", "USERS"), "not ours to delete"
    finally:
        admin.execute_command("ACL", "DELUSER", stranger)
        admin.close()


def test_without_acl_users_signatures_still_protect_bots(
    tmp_path: Path, redis_server: RedisServer, thief_path: str
) -> None:
    """BOTFLEET_BOT_REDIS_ACL=false: bots get the shared URL and can publish on any channel
    (what the README warns about), but B's runtime still drops what the manager did not sign."""
    env = _env(thief_path, BOTFLEET_BOT_REDIS_ACL="false")
    with running_manager(tmp_path, redis_server.url, extra_env=env) as shared:
        alice, a_id, bob, b_id = _start_pair(shared)
        a_url = _stolen_url(alice, a_id)
        assert a_url == redis_server.url, "the shared URL, as documented"
        thief = redis.Redis.from_url(a_url)
        leave = CommandMessage(id="forged-2", action="leave", issued_at="")
        assert thief.publish(command_channel(b_id), leave.to_json()) == 1, "without ACLs it lands"
        thief.close()
        wait_until(lambda: "missing or wrong signature" in _b_log(bob, b_id), timeout=15)
        later = _genuine_command_acked(bob, b_id)
        assert bob.get(f"/bots/{b_id}").json()["status"] == "active"
        assert [c["id"] for c in bob.get(f"/bots/{b_id}/commands").json()["items"]] == [later]
        for client, bot_id in ((alice, a_id), (bob, b_id)):
            client.post(f"/bots/{bot_id}/stop")
            wait_for_status(client, bot_id, {"completed", "failed"}, timeout=30)


# --- the embedded default (make run) ------------------------------------------------------


def test_the_embedded_redis_needs_a_password_that_is_never_shown(tmp_path: Path) -> None:
    """`botfleet serve --welcome` (what `make run` runs) starts its Redis with a password: kept
    0600 in the data folder, the same on every start, never printed, never on a command line."""
    data_dir = tmp_path / "data"
    hold = PortHold()  # one port for both starts, never raced for
    port = hold.port
    env = user_env(BOTFLEET_DATA_DIR=str(data_dir), BOTFLEET_PORT=str(port))
    passwords = []
    for run in range(2):
        log = tmp_path / f"run-{run}.log"
        command = [sys.executable, "-m", "botfleet.manager", "serve", "--welcome"]
        with detached(command, env=env, log=log, listener=hold.listener()):
            wait_until(lambda log=log: "BOTFLEET_KEY=" in log.read_text(), timeout=60)
            wait_until(lambda: _answers(port), timeout=60, what="the manager")
            password_file = data_dir / "redis" / "password"
            assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
            password = password_file.read_text().strip()
            passwords.append(password)
            redis_port = int((data_dir / "redis" / "port").read_text())
            anonymous = redis.Redis(port=redis_port, socket_timeout=5)
            with pytest.raises(redis.exceptions.AuthenticationError):
                anonymous.ping()  # NOAUTH: a bot on this host cannot just connect
            anonymous.close()
            manager_user = redis.Redis(port=redis_port, password=password, socket_timeout=5)
            assert manager_user.ping()
            manager_user.close()
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    assert password.encode() not in cmdline.read_bytes(), cmdline
                except OSError:
                    continue  # the process is gone
            printed = log.read_text()
        assert password not in printed and "redis://" not in printed, printed
    hold.release()
    assert passwords[0] == passwords[1], "the same password on every start"


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False

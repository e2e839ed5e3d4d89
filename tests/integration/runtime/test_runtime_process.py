"""The runtime as a real process (`python -m botfleet.runtime`): its callbacks to a fake manager
over HTTP, how it ends (crash, start failure, SIGTERM, its own exit code, silence), and commands
through a real Redis."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis

from botfleet.runtime.bot import Bot
from botfleet.runtime.env import RuntimeEnv
from botfleet.runtime.protocol import CommandMessage, command_channel, signed_json, signing_key
from tests.support import REPO, RedisServer

BOT_ID = "bot-123"


TOKEN = "tok-very-secret"


KEY = signing_key(TOKEN)  # what the manager signs this bot's Redis messages with


def base_env(**extra: str) -> dict[str, str]:
    env = {
        "BOTFLEET_BOT_ID": BOT_ID,
        "BOTFLEET_BOT_TOKEN": TOKEN,
        "BOTFLEET_CALLBACK_URL": "http://127.0.0.1:9/",
        "BOTFLEET_REDIS_URL": "redis://127.0.0.1:1/0",
        "BOTFLEET_BOT": "demo",
    }
    env.update(extra)
    return env


class FakeManager:
    """Records callbacks and acks; serves `pending` as the pending-commands answer."""

    def __init__(self, pending: list[dict[str, Any]] | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.acks: list[tuple[str, dict[str, Any]]] = []
        self.auth: set[str] = set()
        self.pending = pending or []
        self.on_exited: Callable[[], None] | None = None  # run before `exited` is answered
        self.revoked = False  # the token no longer works: every request answers 401
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.auth.add(self.headers.get("Authorization", ""))
                if fake.revoked:
                    return self._answer({"detail": {"code": "invalid_token"}}, 401)
                self._answer(fake.pending)

            def do_POST(self) -> None:
                fake.auth.add(self.headers.get("Authorization", ""))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if fake.revoked:
                    return self._answer({"detail": {"code": "invalid_token"}}, 401)
                if self.path.endswith("/callbacks"):
                    fake.events.append(body)
                    if body["event"] == "exited" and fake.on_exited is not None:
                        fake.on_exited()
                else:
                    fake.acks.append((self.path.split("/")[-2], body))
                self._answer({})

            def _answer(self, payload: Any, status: int = 200) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def lifecycle(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] != "heartbeat"]

    def names(self) -> list[str]:
        return [e["event"] for e in self.lifecycle()]


@pytest.fixture
def fake_manager() -> Iterator[FakeManager]:
    manager = FakeManager()
    yield manager
    manager.server.shutdown()


def spawn(manager: FakeManager, config: dict[str, Any], redis_url: str = "redis://127.0.0.1:1/0"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTFLEET_")}
    env.update(
        base_env(
            BOTFLEET_CALLBACK_URL=manager.url,
            BOTFLEET_REDIS_URL=redis_url,
            BOTFLEET_BOT_CONFIG=json.dumps(config),
            BOTFLEET_HEARTBEAT_S="0.2",
        )
    )
    return subprocess.Popen(
        [sys.executable, "-m", "botfleet.runtime"], env=env, cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def finish(proc: subprocess.Popen[str], timeout: float = 30.0) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"runtime did not exit; stderr:\n{err}")
    return proc.returncode, out, err


def test_process_crash_reports_crashed(fake_manager: FakeManager) -> None:
    code, _, err = finish(spawn(fake_manager, {"crash_after_s": 0.5}))
    assert code == 1, err
    assert fake_manager.names() == ["started", "exited"]
    exited = fake_manager.lifecycle()[-1]
    assert (exited["exit_code"], exited["reason"]) == (1, "crashed")
    assert exited["detail"].startswith("DemoCrash:")
    assert "Traceback" in err
    assert fake_manager.auth == {f"Bearer {TOKEN}"}
    assert TOKEN not in err


def test_process_start_failure(fake_manager: FakeManager) -> None:
    code, _, err = finish(spawn(fake_manager, {"fail_on_start": True}))
    assert code == 1, err
    assert fake_manager.names() == ["exited"]
    exited = fake_manager.lifecycle()[0]
    assert (exited["exit_code"], exited["reason"]) == (1, "start_failed")
    assert exited["detail"].startswith("RuntimeError:")


def test_process_sigterm_leaves_gracefully(fake_manager: FakeManager) -> None:
    proc = spawn(fake_manager, {})
    wait_until(lambda: len(fake_manager.events) >= 2)  # started and a heartbeat
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc)
    assert code == 0, err
    assert fake_manager.names() == ["started", "leaving", "exited"]
    leaving, exited = fake_manager.lifecycle()[1:]
    assert leaving["reason"] == "sigterm"
    assert (exited["exit_code"], exited["reason"]) == (0, "left")
    assert "demo bot leaving" in out


def test_process_natural_finish_with_code(fake_manager: FakeManager) -> None:
    code, _, err = finish(spawn(fake_manager, {"finish_after_s": 0.3, "exit_code": 3}))
    assert code == 3, err
    assert fake_manager.lifecycle()[-1] | {"detail": None} == {
        "event": "exited", "exit_code": 3, "reason": "bot_error", "detail": None,
    }  # fmt: skip


def test_process_silent_never_calls_back(fake_manager: FakeManager) -> None:
    proc = spawn(fake_manager, {"silent": True})
    # Up and running (its signal handlers installed) once it logs `bot started`; it then runs
    # on until told to leave. Whatever it would have sent, it sent before exiting (see below).
    assert proc.stderr is not None
    early = [proc.stderr.readline()]
    while "bot started" not in early[-1]:
        assert early[-1], f"the runtime ended first: {''.join(early)}"
        early.append(proc.stderr.readline())
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc)
    err = "".join(early) + err
    assert code == 0, err
    assert fake_manager.events == [] and fake_manager.acks == []
    assert "started" in out


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The suite's Redis (tests/conftest.py), password and all, as a manager hands it to bots."""
    return redis_server.url


def test_process_applies_pending_then_published_commands(redis_url: str) -> None:
    import redis

    manager = FakeManager(pending=[{"id": "c1", "action": "reconfigure", "config": {"x": 1}}])
    try:
        proc = spawn(manager, {}, redis_url=redis_url)
        wait_until(lambda: len(manager.acks) == 1)
        publisher = redis.Redis.from_url(redis_url)
        # A forged leave (no signature, or another key's) is dropped; the bot stays.
        forged = CommandMessage(id="f1", action="leave", issued_at="")
        publisher.publish(command_channel(BOT_ID), forged.to_json())
        publisher.publish(command_channel(BOT_ID), signed_json(forged, signing_key("other")))
        leave = signed_json(CommandMessage(id="c2", action="leave", issued_at=""), KEY)
        for _ in range(2):  # at-least-once delivery: the repeat must not be applied twice
            publisher.publish(command_channel(BOT_ID), leave)
        publisher.publish(command_channel(BOT_ID), "garbage")
        code, out, err = finish(proc)
        publisher.close()
    finally:
        manager.server.shutdown()
    assert code == 0, err
    assert manager.acks[:2] == [("c1", {"ok": True}), ("c2", {"ok": True})]
    assert "f1" not in {cid for cid, _ in manager.acks}, "a forged command was applied"
    assert err.count("missing or wrong signature") == 2, err
    assert manager.names() == ["started", "leaving", "exited"]
    assert manager.lifecycle()[1]["reason"] == "leave_requested"
    assert 'reconfigured: {"x": 1}' in out


def test_an_ended_bot_exits_even_when_the_redis_client_swallows_the_cancel(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in the clean-stops test: when the manager ends a bot it deletes the bot's Redis
    user, which drops the listener's connection at about the moment the runtime cancels it; a
    cancel lost inside the Redis client kept the listener reconnecting, so the exited bot lived
    on until the reconciler killed it as an orphan (exit 137). The listener must stop anyway."""
    from botfleet.runtime.client import SilentClient
    from botfleet.runtime.redis_sub import Subscription
    from botfleet.runtime.runner import Runner

    real_get_message = Subscription.get_message
    swallowed: list[bool] = []

    async def get_message_that_loses_a_cancel(self: Subscription, *args: Any, **kwargs: Any) -> Any:
        try:
            return await real_get_message(self, *args, **kwargs)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed.append(True)
            return None  # as if the read had timed out: the cancel is gone

    monkeypatch.setattr(Subscription, "get_message", get_message_that_loses_a_cancel)

    class FinishesAtOnce(Bot):
        async def run(self) -> int:
            await asyncio.sleep(0.3)  # long enough for the listener to be reading
            return 0

    env = RuntimeEnv(
        bot_id=BOT_ID, token=TOKEN, callback_url="http://127.0.0.1:1", redis_url=redis_url,
        command_channel=command_channel(BOT_ID), bot="demo",
    )  # fmt: skip
    bot = FinishesAtOnce(bot_id=BOT_ID, config={}, secrets={}, logger=logging.getLogger("t"))

    async def go() -> int:
        return await asyncio.wait_for(Runner(env, bot, SilentClient()).run(), timeout=20)

    assert asyncio.run(go()) == 0
    assert swallowed, "the listener was never cancelled while reading: the test proves nothing"


@pytest.mark.parametrize(("config", "reason"), [({}, "left"), ({"finish_after_s": 1}, "finished")])
def test_a_clean_exit_logs_no_error_when_the_manager_ends_the_bot_at_once(
    redis_url: str, config: dict[str, Any], reason: str
) -> None:
    """Issue 29, point 6: a manager that ends the bot as soon as it reports `exited` revokes
    its token and deletes its Redis user, which drops its connection. The command listener,
    still running then, read the pending commands and logged the 401 at ERROR (and the lost
    connection at WARNING) after every clean exit. Today's manager ends a bot once its
    workload is gone, which hides the race; the runtime must not rely on it."""
    from botfleet.manager.messaging.bot_acl import BotRedisUsers, bot_url

    users = BotRedisUsers(redis_url)
    users.create({BOT_ID: hashlib.sha256(TOKEN.encode()).hexdigest()})
    manager = FakeManager()

    def end_the_bot() -> None:
        manager.revoked = True
        users.delete([BOT_ID])
        time.sleep(0.5)  # time for a listener still running to notice, before the answer

    manager.on_exited = end_the_bot
    admin = redis.Redis.from_url(redis_url)
    try:
        proc = spawn(manager, config, redis_url=bot_url(redis_url, BOT_ID, TOKEN))
        channel = command_channel(BOT_ID)
        wait_until(lambda: dict(admin.pubsub_numsub(channel)).get(channel.encode()) == 1)
        if reason == "left":
            proc.send_signal(signal.SIGTERM)
        code, _, err = finish(proc)
    finally:
        manager.server.shutdown()
        users.delete([BOT_ID])
        users.close()
        admin.close()
    assert code == 0, err
    assert manager.lifecycle()[-1] == {"event": "exited", "exit_code": 0, "reason": reason}
    alarms = [line for line in err.splitlines() if " ERROR " in line or " WARNING " in line]
    assert alarms == [], err

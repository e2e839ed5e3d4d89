"""The runtime's parts without a process: the loader, its environment, the wire protocol, the
command router. As a real process: tests/integration/runtime/test_runtime_process.py."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import pytest

from botfleet.runtime.bot import LEAVE_COMMAND, Bot
from botfleet.runtime.bots.demo import DemoBot
from botfleet.runtime.commands import CommandRouter
from botfleet.runtime.env import RuntimeConfigError, RuntimeEnv
from botfleet.runtime.loader import BotLoadError, load_bot_class
from botfleet.runtime.protocol import CommandMessage, ProtocolError, command_channel

BOT_ID = "bot-123"
TOKEN = "tok-very-secret"


# --- loader -------------------------------------------------------------------------------


def test_loader_finds_builtin_and_module_class() -> None:
    assert load_bot_class("demo") is DemoBot
    assert load_bot_class("botfleet.runtime.bots.demo:DemoBot") is DemoBot


@pytest.mark.parametrize(
    "spec",
    [
        "nope",
        "no_such_module_xyz:Bot",
        "botfleet.runtime.bots.demo:Missing",
        "botfleet.runtime.bots.demo:DemoCrash",  # exists, but is not a Bot
        "botfleet.runtime.bots.demo:",
    ],
)
def test_loader_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(BotLoadError):
        load_bot_class(spec)


# --- environment --------------------------------------------------------------------------


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


def test_env_defaults_and_repr_hides_secrets() -> None:
    env = RuntimeEnv.from_environ(base_env(BOTFLEET_BOT_SECRETS='{"api_key": "s3cr3t"}'))
    assert env.command_channel == command_channel(BOT_ID) == f"bot_commands:{BOT_ID}"
    assert env.config == {}
    assert env.heartbeat_s == 10.0
    assert env.leave_grace_s == 20.0
    assert env.callback_url == "http://127.0.0.1:9"
    assert env.secrets == {"api_key": "s3cr3t"}
    assert TOKEN not in repr(env)
    assert "s3cr3t" not in repr(env)


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"BOTFLEET_BOT_ID": ""}, "BOTFLEET_BOT_ID"),
        ({"BOTFLEET_BOT_TOKEN": ""}, "BOTFLEET_BOT_TOKEN"),
        ({"BOTFLEET_BOT_CONFIG": "{not json"}, "BOTFLEET_BOT_CONFIG"),
        ({"BOTFLEET_BOT_CONFIG": "[1, 2]"}, "BOTFLEET_BOT_CONFIG"),
        ({"BOTFLEET_BOT_SECRETS": '{"k": 5}'}, "BOTFLEET_BOT_SECRETS"),
        ({"BOTFLEET_HEARTBEAT_S": "often"}, "BOTFLEET_HEARTBEAT_S"),
        ({"BOTFLEET_HEARTBEAT_S": "0"}, "BOTFLEET_HEARTBEAT_S"),
        ({"BOTFLEET_LEAVE_GRACE_S": "-1"}, "BOTFLEET_LEAVE_GRACE_S"),
    ],
)
def test_env_errors_name_the_variable(change: dict[str, str], variable: str) -> None:
    with pytest.raises(RuntimeConfigError, match=variable):
        RuntimeEnv.from_environ(base_env(**change))


def test_env_renders_what_it_parses_with_secrets_apart() -> None:
    """The manager renders, the runtime parses: one class, so the names cannot drift apart."""
    env = RuntimeEnv(
        bot_id=BOT_ID,
        token=TOKEN,
        callback_url="http://127.0.0.1:9",
        redis_url="redis://127.0.0.1:1/0",
        command_channel=command_channel(BOT_ID),
        bot="demo",
        config={"lang": "en"},
        secrets={"api_key": "s3cr3t"},
        heartbeat_s=2.5,
        leave_grace_s=7.0,
    )
    rendered = env.render()
    assert set(rendered.secret_env) == {"BOTFLEET_BOT_TOKEN", "BOTFLEET_BOT_SECRETS"}
    assert TOKEN not in str(rendered.env) and "s3cr3t" not in str(rendered.env)
    assert rendered.env["BOTFLEET_LEAVE_GRACE_S"] == "7.0"
    assert RuntimeEnv.from_environ({**rendered.env, **rendered.secret_env}) == env

    with_password = replace(env, redis_url="redis://:pw@127.0.0.1:1/0", secrets={})
    rendered = with_password.render()
    assert set(rendered.secret_env) == {"BOTFLEET_BOT_TOKEN", "BOTFLEET_REDIS_URL"}
    assert RuntimeEnv.from_environ({**rendered.env, **rendered.secret_env}) == with_password


# --- protocol and command router ----------------------------------------------------------


def test_protocol_round_trip_and_malformed() -> None:
    msg = CommandMessage(
        id="c1", action="reconfigure", issued_at="2024-01-01T00:00:00+00:00",
        config={"a": 1}, config_version=2,
    )  # fmt: skip
    assert CommandMessage.from_json(msg.to_json()) == msg
    for raw in (b"not json", "[]", '{"action": "leave"}', '{"id": "x", "action": "leave", '
                '"config": 3}'):  # fmt: skip
        with pytest.raises(ProtocolError):
            CommandMessage.from_json(raw)


class RecordingClient:
    def __init__(self) -> None:
        self.acks: list[tuple[str, bool, str | None]] = []

    async def ack(self, command_id: str, ok: bool, error: str | None = None) -> bool:
        self.acks.append((command_id, ok, error))
        return True


class RecordingBot(Bot):
    def __init__(self, refuse: bool = False) -> None:
        super().__init__(bot_id=BOT_ID, config={"v": 0}, secrets={}, logger=logging.getLogger())
        self.applied: list[dict[str, Any]] = []
        self.refuse = refuse

    async def on_reconfigure(self, config: dict[str, Any]) -> None:
        if self.refuse:
            raise ValueError("not today")
        self.applied.append(config)


def cmd(cid: str, action: str, **fields: Any) -> CommandMessage:
    return CommandMessage(id=cid, action=action, issued_at="", **fields)


def route(bot: Bot, *commands: CommandMessage) -> RecordingClient:
    client = RecordingClient()
    router = CommandRouter(bot=bot, client=client)  # type: ignore[arg-type]

    async def go() -> None:
        for command in commands:
            await router.handle_command(command)
        for _ in range(5):  # custom commands answer from tasks of their own
            await asyncio.sleep(0)

    asyncio.run(go())
    return client


def test_router_applies_each_id_once() -> None:
    bot = RecordingBot()
    reconf = cmd("c1", "reconfigure", config={"v": 1})
    client = route(bot, reconf, reconf)
    assert bot.applied == [{"v": 1}]
    assert bot.config == {"v": 1}
    assert client.acks == [("c1", True, None), ("c1", True, None)]  # the repeat is re-acked


def test_router_ignores_unknown_actions_and_reports_refusals() -> None:
    bot = RecordingBot(refuse=True)
    client = route(bot, cmd("c1", "dance"), cmd("c2", "reconfigure", config={"v": 9}))
    # A custom command runs as a task of its own, so the reconfigure is answered first.
    assert client.acks == [("c2", False, "not today"), ("c1", False, "unknown_action")]
    assert bot.config == {"v": 0}
    assert not bot.leave_requested


def test_router_leave_acks_then_requests_leave() -> None:
    bot = RecordingBot()
    client = route(bot, cmd("c1", "leave"), cmd("c2", "reconfigure", config={"v": 1}))
    assert bot.leave_requested and bot.leave_reason == LEAVE_COMMAND
    assert client.acks == [("c1", True, None), ("c2", False, "the bot is leaving")]


# --- the real process against a fake manager ----------------------------------------------


# --- with a real Redis, when one is installed ---------------------------------------------

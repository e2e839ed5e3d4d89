"""What a bot class declares (a config model, `@command`s, the secrets it needs) and what the
runtime does with it: the kind document, dispatch, validation at start and on reconfigure, and
the test harness (`botfleet.runtime.testing`) that drives it without a manager."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from botfleet.runtime.bot import Bot, command
from botfleet.runtime.declare import Refused, json_path
from botfleet.runtime.kind import default_kind_name, kind_document
from botfleet.runtime.kind import main as kind_main
from botfleet.runtime.testing import BotExited, BotHarness
from tests.bots.greeter import GreeterBot

GREETER = "tests.bots.greeter:GreeterBot"
KEY = {"api_key": "k-12345"}


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


# --- the kind document --------------------------------------------------------------------


def test_kind_document_has_the_contract_shape() -> None:
    document = kind_document(GREETER)
    assert document["name"] == "greeter"
    assert document["run"] == {"python": GREETER}
    assert document["secrets"] == ["api_key"]
    assert document["description"] == "Greets whoever it is told to."
    schema = document["config_schema"]
    assert schema["properties"]["repeat"]["maximum"] == 5
    assert set(document["commands"]) == {"greet", "count", "key_length"}
    greet = document["commands"]["greet"]
    assert greet["required"] == ["name"] and greet["description"] == "Greet someone by name."
    assert document["commands"]["count"]["properties"] == {"n": {"type": "integer"}}
    assert document["commands"]["key_length"]["type"] == "object"
    assert set(document) <= {"name", "run", "image", "package", "config_schema", "secrets",
                             "commands", "resources", "restart", "description"}  # fmt: skip
    json.dumps(document)  # JSON as it is


def test_kind_document_options_and_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    assert kind_document(GREETER, name="hi", image="me/greeter:1")["name"] == "hi"
    assert kind_document(GREETER, image="me/greeter:1")["image"] == "me/greeter:1"
    demo = kind_document("demo")
    assert demo["run"] == {"python": "botfleet.runtime.bots.demo:DemoBot"}
    assert set(demo["commands"]) == {"echo", "sleep"} and "config_schema" not in demo
    assert kind_main([GREETER, "--name", "g2"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "g2"
    assert kind_main(["no_such_module_xyz:Bot"]) == 2
    assert "cannot import" in capsys.readouterr().err


def test_a_bot_without_declarations_exports_no_commands() -> None:
    class Plain(Bot):
        pass

    assert default_kind_name(Plain) == "plain"
    assert Plain.declared_commands == {}
    assert Plain.parse_config({"a": 1}) == {"a": 1}


@pytest.mark.parametrize(
    ("class_name", "kind"),
    [("GreeterBot", "greeter"), ("HTTPPollerBot", "http_poller"), ("Bot", "bot"), ("X", "x")],
)
def test_default_kind_names(class_name: str, kind: str) -> None:
    assert default_kind_name(type(class_name, (Bot,), {})) == kind


# --- declarations checked when the class is defined ---------------------------------------


def test_bad_declarations_fail_at_class_definition() -> None:
    with pytest.raises(ValueError, match="snake_case"):
        command("Greet")
    with pytest.raises(ValueError, match="reconfigure"):
        command("reconfigure")
    with pytest.raises(TypeError, match="payload"):
        command("x", payload=int)
    with pytest.raises(TypeError, match="Config"):
        type("BadConfig", (Bot,), {"Config": dict})
    with pytest.raises(TypeError, match="secrets"):
        type("BadSecrets", (Bot,), {"secrets": (1, 2)})

    with pytest.raises(TypeError, match="declared twice"):

        class Twice(Bot):
            @command("go")
            async def one(self) -> None: ...

            @command("go")
            async def two(self) -> None: ...


def test_subclass_inherits_and_overrides_commands() -> None:
    class Child(GreeterBot):
        @command("greet")
        async def greet_differently(self, payload: dict[str, Any]) -> str:
            return "child"

    assert set(Child.declared_commands) == {"greet", "count", "key_length"}
    assert Child.declared_commands["greet"].method == "greet_differently"


def test_json_path_escapes() -> None:
    assert json_path(("a", 0, "b/c", "d~e")) == "/a/0/b~1c/d~0e"
    assert json_path(()) == ""


# --- the harness on a declared bot ----------------------------------------------------------


def test_commands_dispatch_validate_and_answer() -> None:
    async def scenario() -> None:
        async with BotHarness(GreeterBot, {"greeting": "hi", "repeat": 2}, KEY) as harness:
            assert isinstance(harness.bot, GreeterBot)
            assert harness.bot.config.repeat == 2 and harness.bot.raw_config["repeat"] == 2
            greet = await harness.command("greet", {"name": "Ada", "shout": True})
            assert greet.ok and greet.result == {"text": "HI ADA HI ADA"}
            bad = await harness.command("greet", {"name": ""})
            assert not bad.ok and bad.error is not None
            assert bad.error.startswith("invalid_payload: /name: ")
            missing = await harness.command("greet", {})
            assert missing.error == "invalid_payload: /name: Field required"
            counted = await harness.command("count", {"n": 2})
            assert counted.result == {"numbers": [1, 2]}
            assert (await harness.command("key_length")).result == len(KEY["api_key"])
            unknown = await harness.command("dance")
            assert (unknown.ok, unknown.error) == (False, "unknown_action")
            assert await harness.leave() == 0
        assert (harness.exit_code, harness.exit_reason) == (0, "left")
        assert [e["event"] for e in harness.events] == ["started", "leaving", "exited"]

    run(scenario)


def test_reconfigure_validated_by_the_model() -> None:
    async def scenario() -> None:
        async with BotHarness(GreeterBot, {}, KEY) as harness:
            assert harness.bot is not None
            wrong = await harness.reconfigure({"greeting": 3, "repeat": 9})
            assert not wrong.ok and wrong.error is not None
            assert wrong.error.startswith("invalid_config: /greeting: ")
            assert "/repeat: " in wrong.error
            assert harness.bot.config.greeting == "hello"  # unchanged
            refused = await harness.reconfigure({"greeting": "refuse"})
            assert refused.error == "the greeter refuses to say 'refuse'"
            taken = await harness.reconfigure({"greeting": "hey"})
            assert taken.ok
            assert isinstance(harness.bot.config, BaseModel)
            assert harness.bot.config.greeting == "hey"
            assert harness.bot.raw_config == {"greeting": "hey"}
            assert (await harness.command("greet", {"name": "Bo"})).result == {"text": "hey Bo"}

    run(scenario)


@pytest.mark.parametrize(
    ("config", "secrets", "reason", "detail"),
    [
        ({"repeat": 0}, KEY, "invalid_config", "/repeat: Input should be greater than or equal"),
        ({}, {}, "missing_secret", "/api_key: required secret is missing"),
    ],
)
def test_start_refused_like_the_runtime(
    config: dict[str, Any], secrets: dict[str, str], reason: str, detail: str
) -> None:
    async def scenario() -> None:
        async with BotHarness(GreeterBot, config, secrets) as harness:
            assert harness.bot is None
            with pytest.raises(BotExited):
                await harness.command("greet", {"name": "x"})
        assert (harness.exit_code, harness.exit_reason) == (1, reason)
        assert harness.exit_detail is not None and harness.exit_detail.startswith(detail)

    run(scenario)


def test_refused_names_each_path() -> None:
    with pytest.raises(Refused) as caught:
        GreeterBot.parse_config({"greeting": [], "repeat": "many"})
    assert caught.value.code == "invalid_config"
    assert [e["path"] for e in caught.value.errors] == ["/greeting", "/repeat"]


def test_reports_secrets_and_leaving_at_the_block_end() -> None:
    async def scenario() -> None:
        config = {"report_on_start": True, "greeting": "yo"}
        async with BotHarness(GreeterBot, config, KEY) as harness:
            assert harness.reports == [{"greeting": "yo"}]
            ack = await harness.set_secrets({"api_key": "longer-key-now"})
            assert ack.ok
            assert (await harness.command("key_length")).result == len("longer-key-now")
        # Leaving the block made it leave, as SIGTERM does.
        assert harness.exit_reason == "left"
        assert harness.events[-2] == {"event": "leaving", "reason": "sigterm"}

    run(scenario)


# --- the harness on the demo bot (its on_command override path and misbehaviours) ----------


def test_demo_bot_in_the_harness(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = {"report_every_s": 0.01, "state_note": "one"}
        async with BotHarness("demo", config, state_dir=tmp_path) as harness:
            assert await harness.next_report() == {"n": 1}
            echo = await harness.command("echo", {"a": [1]})
            assert echo.result == {"a": [1]}
            slept = await harness.command("sleep", {"s": 0})
            assert slept.result == {"slept_s": 0.0}
            too_long = await harness.command("sleep", {"s": 7200})
            assert too_long.error == "sleep: `s` must be between 0 and 3600 seconds"
            # The same command id twice: applied once, answered twice.
            message = harness.message("reconfigure", config={"x": 1})
            await harness.deliver(message)
            await harness.deliver(message)
            assert [a.command_id for a in harness.answers].count(message.id) == 2
            assert await harness.leave() == 0
        assert (tmp_path / "notes.txt").read_text() == "one;"

    run(scenario)


@pytest.mark.parametrize(
    ("config", "code", "reason"),
    [
        ({"fail_on_start": True}, 1, "start_failed"),
        ({"crash_after_s": 0.01}, 1, "crashed"),
        ({"finish_after_s": 0.01, "exit_code": 3}, 3, "bot_error"),
    ],
)
def test_demo_bot_endings(config: dict[str, Any], code: int, reason: str) -> None:
    async def scenario() -> None:
        async with BotHarness("demo", config) as harness:
            assert await harness.wait_exit() == code
        assert harness.exit_reason == reason

    run(scenario)


def test_pending_commands_are_read_at_connect() -> None:
    async def scenario() -> None:
        harness = BotHarness("demo", {})
        harness.client.pending = [harness.message("echo", payload={"early": True})]
        async with harness:
            await harness.client.until(lambda: bool(harness.answers))
            assert harness.answers[0].result == {"early": True}

    run(scenario)


def test_on_command_override_still_answers_first() -> None:
    class Override(Bot):
        @command("ping")
        async def ping(self) -> str:
            return "pong"

        async def on_command(self, action: str, payload: dict[str, Any]) -> Any:
            if action == "hello":
                return "world"
            return await super().on_command(action, payload)

    async def scenario() -> None:
        async with BotHarness(Override) as harness:
            assert (await harness.command("hello")).result == "world"
            assert (await harness.command("ping")).result == "pong"
            assert (await harness.command("nope")).error == "unknown_action"

    run(scenario)

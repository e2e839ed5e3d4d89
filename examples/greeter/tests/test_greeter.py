"""The greeter's hooks, driven in-process by the runtime's test helper: no manager, no Redis."""

import asyncio

from greeter import GreeterBot

from botfleet.runtime.testing import BotHarness


def test_greets_and_takes_a_new_greeting() -> None:
    async def scenario() -> None:
        async with BotHarness(GreeterBot, config={"greeting": "Hi"}) as harness:
            assert harness.reports == [{"greeting": "Hi"}]
            answer = await harness.command("greet", {"name": "Ada"})
            assert answer.ok and answer.result == {"text": "Hi, Ada."}

            assert (await harness.reconfigure({"greeting": "Hey", "excited": True})).ok
            answer = await harness.command("greet", {"name": "Ada"})
            assert answer.result == {"text": "Hey, Ada!"}

            refused = await harness.command("greet", {"name": ""})
            assert not refused.ok and str(refused.error).startswith("invalid_payload: /name")
            assert await harness.leave() == 0

    asyncio.run(scenario())


def test_a_wrong_config_ends_the_start() -> None:
    async def scenario() -> None:
        async with BotHarness(GreeterBot, config={"excited": "very"}) as harness:
            pass
        assert harness.exit_reason == "invalid_config"
        assert "/excited" in (harness.exit_detail or "")

    asyncio.run(scenario())

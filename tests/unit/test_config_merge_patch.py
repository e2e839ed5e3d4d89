"""JSON merge patch (RFC 7396) for `PATCH /bots/{id}/config`, and the runtime's rule that a config
version never goes back: pure, no manager."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from botfleet.manager.services.commands import merge_patch
from botfleet.runtime.bot import Bot
from botfleet.runtime.commands import CommandRouter
from botfleet.runtime.protocol import CommandMessage


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ({"a": "foo"}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        ({}, {"a": [None, {"b": None}]}, {"a": [None, {"b": None}]}),  # arrays are values
    ],
)
def test_merge_patch_follows_rfc_7396(target: dict, patch: dict, result: dict) -> None:
    before = json.dumps(target)
    assert merge_patch(target, patch) == result
    assert json.dumps(target) == before, "the target is not changed in place"


class Recording(Bot):
    def __init__(self) -> None:
        super().__init__(bot_id="b", config={"v": 1}, secrets={}, logger=logging.getLogger())
        self.applied: list[dict[str, Any]] = []

    async def on_reconfigure(self, config: dict[str, Any]) -> None:
        self.applied.append(config)


class Acks:
    def __init__(self) -> None:
        self.acks: list[tuple[str, bool, str | None]] = []

    async def ack(self, command_id: str, ok: bool, error: str | None = None) -> None:
        self.acks.append((command_id, ok, error))


def test_runtime_never_goes_back_to_an_older_config_version() -> None:
    bot, client = Recording(), Acks()
    router = CommandRouter(bot=bot, client=client)  # type: ignore[arg-type]

    def reconfigure(cid: str, version: int) -> CommandMessage:
        config = {"v": version}
        return CommandMessage(
            id=cid, action="reconfigure", issued_at="", config=config, config_version=version
        )

    async def deliver() -> None:
        # v3 arrives first (published), v2 after it (re-published, or read as pending).
        for message in (reconfigure("c3", 3), reconfigure("c2", 2), reconfigure("c4", 4)):
            await router.handle_command(message)

    asyncio.run(deliver())
    assert bot.applied == [{"v": 3}, {"v": 4}]
    assert bot.config == {"v": 4}
    assert client.acks == [("c3", True, None), ("c2", True, None), ("c4", True, None)]

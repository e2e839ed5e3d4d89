"""A bot keeps its secrets when the manager cannot hand new ones: the runtime's command router
against a fake client; pure."""

from __future__ import annotations

import asyncio
import logging

from botfleet.runtime.bot import Bot
from botfleet.runtime.commands import CommandRouter
from botfleet.runtime.protocol import CommandMessage

OLD = "old-secret-value-0a1b2c"


NEW = "new-secret-value-9z8y7x"


class _Client:
    """The runtime's manager client, as far as a `secrets` command uses it."""

    def __init__(self, secrets: dict[str, str] | None) -> None:
        self.secrets = secrets
        self.acks: list[tuple[str, bool, str | None]] = []

    async def fetch_secrets(self) -> dict[str, str] | None:
        return self.secrets

    async def ack(self, command_id: str, ok: bool, error: str | None = None) -> bool:
        self.acks.append((command_id, ok, error))
        return True


def test_the_runtime_keeps_its_secrets_when_the_manager_cannot_hand_new_ones() -> None:
    seen: list[dict[str, str]] = []

    class Keeper(Bot):
        async def on_secrets(self, secrets: dict[str, str]) -> None:
            seen.append(secrets)

    def apply(client: _Client) -> Keeper:
        bot = Keeper(bot_id="b", config={}, secrets={"api_key": OLD}, logger=logging.getLogger())
        router = CommandRouter(bot=bot, client=client)  # type: ignore[arg-type]
        message = CommandMessage(id="c1", action="secrets", issued_at="")
        asyncio.run(router.handle_command(message))
        return bot

    unreachable = _Client(None)
    bot = apply(unreachable)
    assert bot.secrets == {"api_key": OLD} and seen == []
    assert unreachable.acks[0][:2] == ("c1", False)
    assert (unreachable.acks[0][2] or "").startswith("secrets_unavailable")

    fine = _Client({"api_key": NEW})
    bot = apply(fine)
    assert bot.secrets == {"api_key": NEW} and seen == [{"api_key": NEW}]
    assert fine.acks == [("c1", True, None)]

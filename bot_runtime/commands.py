"""Apply commands from the manager to the bot: one handler per action, each id at most once.

Delivery is at least once (Redis re-publishes, pending commands are re-read on reconnect), so
the router remembers every id it applied and answers a repeat with the first outcome instead
of applying it again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot_runtime.bot import LEAVE_COMMAND, Bot
from bot_runtime.client import ManagerClient, SilentClient
from bot_runtime.protocol import ACTION_LEAVE, ACTION_RECONFIGURE, CommandMessage, describe_error

log = logging.getLogger("bot_runtime.commands")

Outcome = tuple[bool, str | None]


class CommandRouter:
    def __init__(self, *, bot: Bot, client: ManagerClient | SilentClient) -> None:
        self.bot = bot
        self.client = client
        self._outcomes: dict[str, Outcome] = {}  # the ids already applied
        self._config_version = 0  # of the newest config applied
        self._handlers: dict[str, Callable[[CommandMessage], Awaitable[Outcome]]] = {
            ACTION_RECONFIGURE: self.handle_reconfigure,
            ACTION_LEAVE: self.handle_leave,
        }

    async def handle_command(self, msg: CommandMessage) -> None:
        if msg.id in self._outcomes:
            log.info("command %s (%s) already applied; acking again", msg.id, msg.action)
            await self.client.ack(msg.id, *self._outcomes[msg.id])
            return
        handler = self._handlers.get(msg.action)
        if handler is None:
            log.warning("command %s: unknown action %r ignored", msg.id, msg.action)
            outcome: Outcome = (False, f"unknown action {msg.action!r}")
        else:
            log.info("command %s: %s", msg.id, msg.action)
            outcome = await handler(msg)
        self._outcomes[msg.id] = outcome
        await self.client.ack(msg.id, *outcome)
        # Leaving starts only once the ack is out, so the manager never sees a leave unacked.
        if msg.action == ACTION_LEAVE and outcome[0]:
            self.bot._begin_leave(LEAVE_COMMAND)

    async def handle_reconfigure(self, msg: CommandMessage) -> Outcome:
        if self.bot.leave_requested:
            return False, "the bot is leaving"
        if msg.config is None:
            return False, "reconfigure needs a config"
        version = msg.config_version or 0
        if version and version <= self._config_version:
            # Delivered late (a re-publish, a pending read): a newer config already holds, and
            # applying this one would go backwards. Acked, since the newer config is what the
            # user asked for last (a PATCH merges into the newest config, so it carries this one).
            log.info(
                "command %s: config %s superseded by %s", msg.id, version, self._config_version
            )
            return True, None
        try:
            await self.bot.on_reconfigure(msg.config)
        except Exception as exc:
            log.warning("command %s: reconfigure refused: %s", msg.id, describe_error(exc))
            return False, str(exc) or type(exc).__name__
        self.bot.config = msg.config
        self._config_version = max(self._config_version, version)
        return True, None

    async def handle_leave(self, msg: CommandMessage) -> Outcome:
        return True, None

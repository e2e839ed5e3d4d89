"""Apply commands from the manager to the bot: one handler per action, each id at most once.

Delivery is at least once (Redis re-publishes, pending commands are re-read on reconnect), so
the router remembers every id it applied and answers a repeat with the first outcome instead
of applying it again. A custom command (any action but reconfigure, leave and secrets) runs as
a task of its own: a slow one (the demo's `sleep`) never holds up a leave or the next command.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from botfleet.runtime.bot import LEAVE_COMMAND, Bot, UnknownAction
from botfleet.runtime.client import ManagerClient, SilentClient
from botfleet.runtime.protocol import (
    ACTION_LEAVE,
    ACTION_RECONFIGURE,
    ACTION_SECRETS,
    MAX_RESULT_BYTES,
    UNKNOWN_ACTION,
    CommandMessage,
    describe_error,
    json_size,
)

log = logging.getLogger("botfleet.runtime.commands")

#: (ok, error, result): what the ack carries.
Outcome = tuple[bool, str | None, Any]


class CommandRouter:
    def __init__(self, *, bot: Bot, client: ManagerClient | SilentClient) -> None:
        self.bot = bot
        self.client = client
        self._outcomes: dict[str, Outcome] = {}  # the ids already applied
        self._running: dict[str, asyncio.Task[None]] = {}  # custom commands being answered
        self._config_version = 0  # of the newest config applied
        self._handlers: dict[str, Callable[[CommandMessage], Awaitable[Outcome]]] = {
            ACTION_RECONFIGURE: self.handle_reconfigure,
            ACTION_LEAVE: self.handle_leave,
            ACTION_SECRETS: self.handle_secrets,
        }

    async def handle_command(self, msg: CommandMessage) -> None:
        if msg.id in self._outcomes:
            log.info("command %s (%s) already applied; acking again", msg.id, msg.action)
            await self._ack(msg.id, self._outcomes[msg.id])
            return
        if msg.id in self._running:
            log.info("command %s (%s) is still running", msg.id, msg.action)
            return
        handler = self._handlers.get(msg.action)
        if handler is None:
            task = asyncio.create_task(self._custom(msg), name=f"command-{msg.action}")
            self._running[msg.id] = task
            task.add_done_callback(lambda _: self._running.pop(msg.id, None))
            return
        log.info("command %s: %s", msg.id, msg.action)
        outcome = await handler(msg)
        self._outcomes[msg.id] = outcome
        await self._ack(msg.id, outcome)
        # Leaving starts only once the ack is out, so the manager never sees a leave unacked.
        if msg.action == ACTION_LEAVE and outcome[0]:
            self.bot._begin_leave(LEAVE_COMMAND)

    def cancel_running(self) -> None:
        """The bot is ending: custom commands still being answered stop (they expire)."""
        for task in list(self._running.values()):
            task.cancel()

    async def _ack(self, command_id: str, outcome: Outcome) -> None:
        ok, error, result = outcome
        if result is None:  # the plain ack, as before custom commands
            await self.client.ack(command_id, ok, error)
        else:
            await self.client.ack(command_id, ok, error, result=result)

    async def _custom(self, msg: CommandMessage) -> None:
        log.info("command %s: custom %s", msg.id, msg.action)
        outcome = await self.handle_custom(msg)
        self._outcomes[msg.id] = outcome
        await self._ack(msg.id, outcome)

    async def handle_custom(self, msg: CommandMessage) -> Outcome:
        """The bot's `on_command`: its JSON answer is the result, its exception the error."""
        try:
            result = await self.bot.on_command(msg.action, dict(msg.payload or {}))
        except UnknownAction:
            log.warning("command %s: unknown action %r", msg.id, msg.action)
            return False, UNKNOWN_ACTION, None
        except Exception as exc:
            log.warning("command %s (%s) failed: %s", msg.id, msg.action, describe_error(exc))
            return False, str(exc) or type(exc).__name__, None
        try:
            size = json_size(result)
        except (TypeError, ValueError) as exc:
            return False, f"result_not_json: the bot's answer is not JSON ({exc})", None
        if size > MAX_RESULT_BYTES:
            return False, f"result_too_large: {size} bytes, at most {MAX_RESULT_BYTES}", None
        return True, None, result

    async def handle_reconfigure(self, msg: CommandMessage) -> Outcome:
        if self.bot.leave_requested:
            return False, "the bot is leaving", None
        if msg.config is None:
            return False, "reconfigure needs a config", None
        version = msg.config_version or 0
        if version and version <= self._config_version:
            # Delivered late (a re-publish, a pending read): a newer config already holds, and
            # applying this one would go backwards. Acked, since the newer config is what the
            # user asked for last (a PATCH merges into the newest config, so it carries this one).
            log.info(
                "command %s: config %s superseded by %s", msg.id, version, self._config_version
            )
            return True, None, None
        try:
            # With a `Config` model: the errors' paths in the ack, and the bot sees an instance.
            config = self.bot.parse_config(msg.config)
            await self.bot.on_reconfigure(config)
        except Exception as exc:
            log.warning("command %s: reconfigure refused: %s", msg.id, describe_error(exc))
            return False, str(exc) or type(exc).__name__, None
        self.bot.config, self.bot.raw_config = config, msg.config
        self._config_version = max(self._config_version, version)
        return True, None, None

    async def handle_leave(self, msg: CommandMessage) -> Outcome:
        return True, None, None

    async def handle_secrets(self, msg: CommandMessage) -> Outcome:
        """Fetch the new secrets over HTTP with the bot's token (the command carries none), then
        hand them to the bot. Never logs them."""
        secrets = await self.client.fetch_secrets()
        if secrets is None:
            return False, "secrets_unavailable: could not read the secrets from the manager", None
        try:
            await self.bot.on_secrets(secrets)
        except Exception as exc:
            log.warning("command %s: new secrets refused: %s", msg.id, type(exc).__name__)
            return False, str(exc) or type(exc).__name__, None
        self.bot.secrets = secrets
        return True, None, None

"""`TelegramBot`: a scenario bot on aiogram 3, long polling (`bot: "telegram"`).

Secrets: `bot_token`. Config: `scenario.TelegramConfig` (language, scenario, optional api_url and
poll_timeout_s). Each update is handled, then the chat's new step and the next update id are saved
(`conversation.Conversation`), all under one lock that a reconfigure also takes: an update is
answered by the old scenario or the new one, never both, never neither. A restart resumes at the
saved offset, so no update is answered twice (unless the bot dies between a reply and its save).
Replies are paced to Telegram's flood limits (`flood.FloodPacer`); 429 `retry_after` is waited
out and the same call retried; 401 ends the bot `failed` with `platform_unauthorized`
(`client.BotApi`). Custom commands: `broadcast {text}` and `stats`. The token is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import Any

from aiogram.exceptions import TelegramAPIError
from aiogram.types import Update

from botfleet.runtime.bot import Bot, BotFailed
from botfleet.runtime.bots.telegram.client import BotApi, Transient, connect
from botfleet.runtime.bots.telegram.conversation import Conversation
from botfleet.runtime.bots.telegram.flood import FloodPacer
from botfleet.runtime.bots.telegram.scenario import MAX_MESSAGE_CHARS, TelegramConfig, parse_config
from botfleet.runtime.bots.telegram.state import ConversationStore

#: The exit reason of a bot whose token Telegram refuses; never restarted by the manager.
UNAUTHORIZED = "platform_unauthorized"
ALLOWED_UPDATES = ["message", "callback_query"]
REPORT_EVERY_S = 3.0  # at most one report this often
AUTO_TICK_S = 0.25  # how often due automatic transitions are looked for
POLL_BACKOFF_CAP_S = 30.0
BROADCAST_CONCURRENCY = 8


class TelegramBot(Bot):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = asyncio.Lock()  # updates, automatic steps and reconfigures, one at a time
        self._pacer = FloodPacer()
        self._fatal: BotFailed | None = None
        self._fatal_set = asyncio.Event()
        self._changed = asyncio.Event()  # something the report shows changed
        self.api = BotApi(
            self._pacer,
            self.log,
            scrub=self._scrub,
            unauthorized=lambda detail: self._fail(UNAUTHORIZED, detail),
        )
        self.conversation = Conversation(
            self.api,
            self._pacer,
            parse_config(self.config),
            log=self.log,
            on_error=self._error,
            on_change=self._changed.set,
        )

    @property
    def settings(self) -> TelegramConfig:
        return self.conversation.settings

    @property
    def store(self) -> ConversationStore:
        return self.conversation.store

    # -- lifecycle ---------------------------------------------------------------------------

    async def on_start(self) -> None:
        try:
            self.api.use(connect(self.secrets.get("bot_token"), self.settings.api_url))
        except ValueError as exc:
            raise self._fail(UNAUTHORIZED, str(exc)) from None
        client = self.api.client
        try:
            me = await self.api.call(client.get_me)
            # Long polling and a webhook exclude each other (getUpdates answers 409 while a
            # webhook is set): a token that was used with a webhook is switched over.
            await self.api.call(lambda: client.delete_webhook(drop_pending_updates=False))
        except BaseException:
            await self.api.close()
            raise
        self.conversation.store = ConversationStore(self.state_dir)
        self.store.load()
        self.log.info(
            "telegram bot @%s started: %d chats resumed, next update %s",
            me.username, len(self.store.chats), self.store.offset,
        )  # fmt: skip

    async def run(self) -> int | None:
        helpers = [
            asyncio.create_task(self._auto_loop(), name="telegram-auto"),
            asyncio.create_task(self._report_loop(), name="telegram-report"),
        ]
        try:
            await self._poll_loop()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self.api.close()
        if self._fatal is not None:
            raise self._fatal
        return None

    async def on_leave(self) -> None:
        with contextlib.suppress(Exception):
            await self.report(self.stats())

    async def on_reconfigure(self, config: dict[str, Any]) -> None:
        """Swap the scenario and language live; raises ScenarioError (refused) if invalid.
        Chats stay at the step of the same name, or go back to the start if it is gone."""
        new = parse_config(config)
        async with self._lock:
            if new.api_url != self.settings.api_url and self.api.connected:
                self.api.use(connect(self.secrets.get("bot_token"), new.api_url))
            self.conversation.reconfigure(new)
        self.log.info("scenario reconfigured (language %s)", new.language)

    async def on_secrets(self, secrets: dict[str, str]) -> None:
        """A new `bot_token`: checked with getMe before it replaces the old one."""
        client = connect(secrets.get("bot_token"), self.settings.api_url)
        try:
            await client.get_me()
        except TelegramAPIError as exc:
            await client.session.close()
            raise ValueError(f"the new bot_token does not work: {self._scrub(str(exc))}") from None
        async with self._lock:
            self.api.use(client)

    async def on_command(self, action: str, payload: dict[str, Any]) -> Any:
        if action == "stats":
            return self.stats()
        if action == "broadcast":
            return await self._broadcast(payload)
        return await super().on_command(action, payload)

    def stats(self) -> dict[str, Any]:
        """The report, and the `stats` command's answer."""
        counters = self.store.counters
        return {
            "chats": len(self.store.chats),
            "messages_in": counters.messages_in,
            "messages_out": counters.messages_out,
            "last_update_at": counters.last_update_at,
            "errors": counters.errors,
            "last_error": counters.last_error,
        }

    # -- polling -------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        """getUpdates from the saved offset until a leave or a fatal error; handle each batch."""
        delay = 1.0
        while not (self.leave_requested or self._fatal_set.is_set()):
            poll = asyncio.create_task(self.api.call(self._get_updates))
            stop = asyncio.create_task(self._stop_requested())
            await asyncio.wait({poll, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not poll.done():  # leaving: the batch was not confirmed, it is fetched next time
                poll.cancel()
                await asyncio.gather(poll, return_exceptions=True)
                return
            if isinstance(failure := poll.exception(), BotFailed):
                return
            if failure is not None:
                self._error("getUpdates", failure)
                await self._pause(delay)
                delay = min(delay * 2, POLL_BACKOFF_CAP_S)
                continue
            delay = 1.0
            try:
                async with self._lock:
                    for update in poll.result():
                        await self.conversation.handle(update)
            except Transient as exc:  # the update stays unconfirmed and comes again
                self._error("reply", exc)
                await self._pause(delay)
            except BotFailed:
                return

    def _get_updates(self) -> Awaitable[list[Update]]:
        timeout = self.settings.poll_timeout_s
        return self.api.client.get_updates(
            offset=self.store.offset,
            timeout=timeout,
            allowed_updates=ALLOWED_UPDATES,
            request_timeout=timeout + 15,
        )

    async def _stop_requested(self) -> None:
        leave = asyncio.create_task(self.wait_for_leave())
        fatal = asyncio.create_task(self._fatal_set.wait())
        try:
            await asyncio.wait({leave, fatal}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            leave.cancel()
            fatal.cancel()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_requested(), seconds)

    # -- automatic transitions, broadcast, reports -------------------------------------------

    async def _auto_loop(self) -> None:
        while True:
            due = self.store.next_due()
            wait = AUTO_TICK_S if due is None else min(max(due - time.time(), 0.0), AUTO_TICK_S)
            await asyncio.sleep(wait)
            try:
                async with self._lock:
                    await self.conversation.run_due()
            except BotFailed:
                return
            except Transient as exc:
                self._error("automatic step", exc)
                await asyncio.sleep(1.0)
            except Exception as exc:  # keep the loop alive; the chat's step was cleared
                self.log.exception("automatic step failed")
                self._error("automatic step", exc)

    async def _broadcast(self, payload: dict[str, Any]) -> dict[str, int]:
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("broadcast needs a non-empty `text`")
        if len(text) > MAX_MESSAGE_CHARS:
            raise ValueError(f"broadcast: `text` is at most {MAX_MESSAGE_CHARS} characters")
        gate = asyncio.Semaphore(BROADCAST_CONCURRENCY)
        sent = failed = 0

        async def one(chat_id: int) -> None:
            nonlocal sent, failed
            async with gate:
                try:
                    await self.conversation.send(chat_id, text)
                    sent += 1
                except (TelegramAPIError, Transient) as exc:
                    failed += 1
                    self._error(f"broadcast to chat {chat_id}", exc)

        await asyncio.gather(*(one(chat_id) for chat_id in list(self.store.chats)))
        self._changed.set()
        self.log.info("broadcast: %d sent, %d failed", sent, failed)
        return {"sent": sent, "failed": failed}

    async def _report_loop(self) -> None:
        """Report at start, then after changes, at most once every REPORT_EVERY_S."""
        while True:
            self._changed.clear()
            try:
                await self.report(self.stats())
            except Exception as exc:
                self.log.warning("report failed: %s", exc)
            await asyncio.sleep(REPORT_EVERY_S)
            await self._changed.wait()

    # -- failures ------------------------------------------------------------------------------

    def _fail(self, reason: str, detail: str) -> BotFailed:
        """A permanent failure: remembered, ends the poll loop, and is raised from run()."""
        if self._fatal is None:
            self._fatal = BotFailed(reason, self._scrub(detail))
            self.log.error("giving up: %s", self._fatal)
            self._fatal_set.set()
        return self._fatal

    def _error(self, what: str, exc: BaseException) -> None:
        message = self._scrub(f"{what}: {type(exc).__name__}: {exc}")[:500]
        self.store.counters.errors += 1
        self.store.counters.last_error = message
        self.log.warning("%s", message)
        self._changed.set()

    def _scrub(self, text: str) -> str:
        """The text without the bot's token (aiogram errors may quote a URL)."""
        token = self.secrets.get("bot_token")
        return text.replace(token, "<bot_token>") if token else text

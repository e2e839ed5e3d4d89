"""`TelegramBot`: a scenario bot on aiogram 3, long polling (`bot: "telegram"`).

Secrets: `bot_token`. Config: `scenario.TelegramConfig` (language, scenario, optional api_url and
poll_timeout_s). Each update is handled, then the chat's new step and the next update id are saved
(`state.ConversationStore`), all under one lock that a reconfigure also takes: an update is
answered by the old scenario or the new one, never both, never neither. A restart resumes at the
saved offset, so no update is answered twice (unless the bot dies between a reply and its save).
Replies are paced to Telegram's flood limits (`flood.FloodPacer`); 429 `retry_after` is waited
out and the same call retried; 401 ends the bot `failed` with `platform_unauthorized`.
Custom commands: `broadcast {text}` and `stats`. The token is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiogram import Bot as TelegramClient
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from aiogram.utils.token import TokenValidationError, validate_token

from botfleet.runtime.bot import Bot, BotFailed
from botfleet.runtime.bots.telegram.flood import FloodPacer
from botfleet.runtime.bots.telegram.scenario import (
    DEFAULT_HELP,
    MAX_MESSAGE_CHARS,
    Step,
    TelegramConfig,
    parse_config,
    pick,
    render,
)
from botfleet.runtime.bots.telegram.state import Chat, ConversationStore

T = TypeVar("T")

#: The exit reason of a bot whose token Telegram refuses; never restarted by the manager.
UNAUTHORIZED = "platform_unauthorized"
ALLOWED_UPDATES = ["message", "callback_query"]
REPORT_EVERY_S = 3.0  # at most one report this often
AUTO_TICK_S = 0.25  # how often due automatic transitions are looked for
MAX_RETRY_AFTER = 10  # 429s in a row on one call before giving up on it
MAX_TRANSIENT = 3  # network or 5xx failures in a row on one call before giving up on it
POLL_BACKOFF_CAP_S = 30.0
BROADCAST_CONCURRENCY = 8


class _Transient(Exception):
    """Telegram could not be reached (or answered 5xx) on every retry: try again later."""


class TelegramBot(Bot):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings: TelegramConfig = parse_config(self.config)
        self.store = ConversationStore(None)
        self._lock = asyncio.Lock()  # updates, automatic steps and reconfigures, one at a time
        self._pacer = FloodPacer()
        self._client: TelegramClient | None = None
        self._retired: list[TelegramClient] = []  # replaced clients, closed when the bot ends
        self._fatal: BotFailed | None = None
        self._fatal_set = asyncio.Event()
        self._changed = asyncio.Event()  # something the report shows changed

    # -- lifecycle ---------------------------------------------------------------------------

    async def on_start(self) -> None:
        try:
            self._client = self._connect(self.secrets.get("bot_token"), self.settings.api_url)
        except ValueError as exc:
            raise self._fail(UNAUTHORIZED, str(exc)) from None
        client = self._client
        try:
            me = await self._call(client.get_me)
            # Long polling and a webhook exclude each other (getUpdates answers 409 while a
            # webhook is set): a token that was used with a webhook is switched over.
            await self._call(lambda: client.delete_webhook(drop_pending_updates=False))
        except BaseException:
            await self._close_clients()
            raise
        self.store = ConversationStore(self.state_dir)
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
            await self._close_clients()
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
            if new.api_url != self.settings.api_url and self._client is not None:
                self._retired.append(self._client)
                self._client = self._connect(self.secrets.get("bot_token"), new.api_url)
            now = time.time()
            for chat in self.store.chats.values():
                if chat.step is None:
                    continue
                step = new.scenario.steps.get(chat.step)
                if step is None:
                    chat.step = new.scenario.start_step
                    step = new.scenario.steps[chat.step]
                    chat.auto_due = None
                if step.auto is None:
                    chat.auto_due = None
                elif chat.auto_due is None:
                    chat.auto_due = now + step.auto.after_s
            self.settings = new
            self.store.save()
        self.log.info("scenario reconfigured (language %s)", new.language)

    async def on_secrets(self, secrets: dict[str, str]) -> None:
        """A new `bot_token`: checked with getMe before it replaces the old one."""
        client = self._connect(secrets.get("bot_token"), self.settings.api_url)
        try:
            await client.get_me()
        except TelegramAPIError as exc:
            await client.session.close()
            raise ValueError(f"the new bot_token does not work: {self._scrub(str(exc))}") from None
        async with self._lock:
            if self._client is not None:
                self._retired.append(self._client)
            self._client = client

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
            poll = asyncio.create_task(self._call(self._get_updates))
            stop = asyncio.create_task(self._stop_requested())
            await asyncio.wait({poll, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not poll.done():  # leaving: the batch was not confirmed, it is fetched next time
                poll.cancel()
                await asyncio.gather(poll, return_exceptions=True)
                return
            if isinstance(exc := poll.exception(), BotFailed):
                return
            if exc is not None:
                self._error("getUpdates", exc)
                await self._pause(delay)
                delay = min(delay * 2, POLL_BACKOFF_CAP_S)
                continue
            delay = 1.0
            try:
                async with self._lock:
                    for update in poll.result():
                        await self._handle(update)
            except _Transient as exc:  # the update stays unconfirmed and comes again
                self._error("reply", exc)
                await self._pause(delay)
            except BotFailed:
                return

    def _get_updates(self) -> Awaitable[list[Update]]:
        timeout = self.settings.poll_timeout_s
        return self._require_client().get_updates(
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

    async def _handle(self, update: Update) -> None:
        """Answer one update, then save its chat and the offset past it (under the lock)."""
        if self.store.offset is not None and update.update_id < self.store.offset:
            return  # answered before a restart
        try:
            if update.message is not None and update.message.text is not None:
                await self._on_text(update.message)
            elif update.callback_query is not None:
                await self._on_press(update.callback_query)
        except (BotFailed, _Transient):
            raise
        except TelegramAPIError as exc:  # e.g. 403: the user blocked the bot; move on
            self._error(f"update {update.update_id}", exc)
        except Exception as exc:  # a bug must not make the update come back forever
            self.log.exception("update %s could not be handled", update.update_id)
            self._error(f"update {update.update_id}", exc)
        self.store.offset = update.update_id + 1
        self.store.counters.last_update_at = datetime.now(UTC).isoformat()
        self.store.save()
        self._changed.set()

    async def _on_text(self, message: Message) -> None:
        chat_id = message.chat.id
        chat = self.store.chat(chat_id)
        self.store.counters.messages_in += 1
        text = message.text or ""
        command = text.split()[0].split("@")[0].lower() if text.startswith("/") else None
        scenario = self.settings.scenario
        step = scenario.steps.get(chat.step) if chat.step else None
        if command == "/start":
            chat.data.clear()
            await self._enter(chat_id, chat, scenario.start_step)
        elif command == "/help":
            help_text = pick(scenario.help, self.settings.language) if scenario.help else None
            await self._send(chat_id, help_text or DEFAULT_HELP)
        elif step is None:
            await self._enter(chat_id, chat, scenario.start_step)
        elif step.collect is not None and step.next is not None:
            chat.remember(step.collect, text)
            await self._enter(chat_id, chat, step.next)
        else:
            await self._show(chat_id, chat, step)

    async def _on_press(self, query: CallbackQuery) -> None:
        self.store.counters.messages_in += 1
        client = self._require_client()
        await self._call(lambda: client.answer_callback_query(callback_query_id=query.id))
        message = query.message
        chat_id = message.chat.id if message is not None else query.from_user.id
        if message is not None:
            with contextlib.suppress(TelegramBadRequest):  # already removed
                await self._call(
                    lambda: client.edit_message_reply_markup(
                        chat_id=chat_id, message_id=message.message_id
                    )
                )
        chat = self.store.chat(chat_id)
        if query.data in self.settings.scenario.steps:
            await self._enter(chat_id, chat, query.data)

    async def _enter(self, chat_id: int, chat: Chat, name: str) -> None:
        step = self.settings.scenario.steps[name]
        chat.step, chat.auto_due = name, None
        await self._show(chat_id, chat, step)
        if step.auto is not None:  # counted from when the user got the step's message
            chat.auto_due = time.time() + step.auto.after_s

    async def _show(self, chat_id: int, chat: Chat, step: Step) -> None:
        language = self.settings.language
        keyboard = None
        if step.buttons:
            rows = [
                [InlineKeyboardButton(text=pick(b.text, language), callback_data=b.goto)]
                for b in step.buttons
            ]
            keyboard = InlineKeyboardMarkup(inline_keyboard=rows)
        await self._send(chat_id, render(step.message, language, chat.data), keyboard)

    async def _send(
        self, chat_id: int, text: str, keyboard: InlineKeyboardMarkup | None = None
    ) -> None:
        await self._pacer.acquire(chat_id)
        client = self._require_client()
        await self._call(
            lambda: client.send_message(chat_id=chat_id, text=text, reply_markup=keyboard)
        )
        self.store.counters.messages_out += 1

    # -- automatic transitions, broadcast, reports -------------------------------------------

    async def _auto_loop(self) -> None:
        while True:
            due = self.store.next_due()
            wait = AUTO_TICK_S if due is None else min(max(due - time.time(), 0.0), AUTO_TICK_S)
            await asyncio.sleep(wait)
            try:
                async with self._lock:
                    await self._run_due()
            except BotFailed:
                return
            except _Transient as exc:
                self._error("automatic step", exc)
                await asyncio.sleep(1.0)
            except Exception as exc:  # keep the loop alive; the chat's step was cleared
                self.log.exception("automatic step failed")
                self._error("automatic step", exc)

    async def _run_due(self) -> None:
        for chat_id in self.store.due(time.time()):
            chat = self.store.chats[chat_id]
            step_name = chat.step
            step = self.settings.scenario.steps.get(step_name or "")
            chat.auto_due = None
            if step is not None and step.auto is not None:
                try:
                    await self._enter(chat_id, chat, step.auto.goto)
                except _Transient:
                    chat.step, chat.auto_due = step_name, time.time()  # still due: try again
                    raise
                except TelegramAPIError as exc:
                    self._error(f"automatic step in chat {chat_id}", exc)
            self.store.save()
            self._changed.set()

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
                    await self._send(chat_id, text)
                    sent += 1
                except (TelegramAPIError, _Transient) as exc:
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

    # -- talking to Telegram -----------------------------------------------------------------

    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        """One Bot API call: 429 waits `retry_after` (for every send) and retries the same call,
        network errors and 5xx retry a few times (then `_Transient`), 401 fails the bot."""
        retry_after = transient = 0
        while True:
            await self._pacer.wait_hold()
            try:
                return await make()
            except TelegramRetryAfter as exc:
                retry_after += 1
                if retry_after > MAX_RETRY_AFTER:
                    raise
                self.log.warning("Telegram says 429: retry after %ss", exc.retry_after)
                self._pacer.hold(exc.retry_after)
            except TelegramUnauthorizedError as exc:
                raise self._fail(UNAUTHORIZED, f"Telegram refused the bot_token: {exc}") from None
            except (TelegramNetworkError, TelegramServerError) as exc:
                transient += 1
                if transient >= MAX_TRANSIENT:
                    raise _Transient(self._scrub(f"{type(exc).__name__}: {exc}")) from None
                await asyncio.sleep(0.5 * 2**transient)

    @staticmethod
    def _connect(token: str | None, api_url: str) -> TelegramClient:
        """A client for `token` on `api_url` (no request yet); ValueError for a missing or
        malformed token."""
        if not token:
            raise ValueError("no `bot_token` secret: pass the token from @BotFather")
        try:
            validate_token(token)
        except TokenValidationError:
            raise ValueError("the `bot_token` secret is not a Telegram bot token") from None
        session = AiohttpSession(api=TelegramAPIServer.from_base(api_url))
        return TelegramClient(token, session=session)

    def _require_client(self) -> TelegramClient:
        if self._client is None:
            raise RuntimeError("the telegram bot has not started")
        return self._client

    async def _close_clients(self) -> None:
        clients = [*self._retired, *([self._client] if self._client else [])]
        self._retired.clear()
        for client in clients:
            with contextlib.suppress(Exception):
                await client.session.close()

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

"""What the bot says: each update and each due automatic step, walked through the scenario.

An update is answered, then the chat's new step and the next update id are saved
(`state.ConversationStore`); the caller holds the bot's lock, which a reconfigure also takes, so
an update is answered by the old scenario or the new one, never both, never neither. Replies are
paced to Telegram's flood limits (`flood.FloodPacer`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update

from botfleet.runtime.bot import BotFailed
from botfleet.runtime.bots.telegram.client import BotApi, Transient
from botfleet.runtime.bots.telegram.flood import FloodPacer
from botfleet.runtime.bots.telegram.scenario import DEFAULT_HELP, Step, TelegramConfig, pick, render
from botfleet.runtime.bots.telegram.state import Chat, ConversationStore


class Conversation:
    """The scenario in force, the chats' store, and how an update or a due step moves a chat.

    `on_error(what, exc)` counts and reports a failure; `on_change()` says the report changed.
    """

    def __init__(
        self,
        api: BotApi,
        pacer: FloodPacer,
        settings: TelegramConfig,
        *,
        log: logging.Logger,
        on_error: Callable[[str, BaseException], None],
        on_change: Callable[[], None],
    ) -> None:
        self.api = api
        self.pacer = pacer
        self.settings = settings
        self.store = ConversationStore(None)
        self._log = log
        self._on_error = on_error
        self._on_change = on_change

    def reconfigure(self, new: TelegramConfig) -> None:
        """Swap the scenario and language; chats stay at the step of the same name, or go back
        to the start if it is gone. Caller holds the bot's lock."""
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

    # -- updates -------------------------------------------------------------------------------

    async def handle(self, update: Update) -> None:
        """Answer one update, then save its chat and the offset past it (under the lock)."""
        if self.store.offset is not None and update.update_id < self.store.offset:
            return  # answered before a restart
        try:
            if update.message is not None and update.message.text is not None:
                await self._on_text(update.message)
            elif update.callback_query is not None:
                await self._on_press(update.callback_query)
        except (BotFailed, Transient):
            raise
        except TelegramAPIError as exc:  # e.g. 403: the user blocked the bot; move on
            self._on_error(f"update {update.update_id}", exc)
        except Exception as exc:  # a bug must not make the update come back forever
            self._log.exception("update %s could not be handled", update.update_id)
            self._on_error(f"update {update.update_id}", exc)
        self.store.offset = update.update_id + 1
        self.store.counters.last_update_at = datetime.now(UTC).isoformat()
        self.store.save()
        self._on_change()

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
            await self.send(chat_id, help_text or DEFAULT_HELP)
        elif step is None:
            await self._enter(chat_id, chat, scenario.start_step)
        elif step.collect is not None and step.next is not None:
            chat.remember(step.collect, text)
            await self._enter(chat_id, chat, step.next)
        else:
            await self._show(chat_id, chat, step)

    async def _on_press(self, query: CallbackQuery) -> None:
        self.store.counters.messages_in += 1
        client = self.api.client
        await self.api.call(lambda: client.answer_callback_query(callback_query_id=query.id))
        message = query.message
        chat_id = message.chat.id if message is not None else query.from_user.id
        if message is not None:
            with contextlib.suppress(TelegramBadRequest):  # already removed
                await self.api.call(
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
        await self.send(chat_id, render(step.message, language, chat.data), keyboard)

    async def send(
        self, chat_id: int, text: str, keyboard: InlineKeyboardMarkup | None = None
    ) -> None:
        """One message, paced to the flood limits."""
        await self.pacer.acquire(chat_id)
        client = self.api.client
        await self.api.call(
            lambda: client.send_message(chat_id=chat_id, text=text, reply_markup=keyboard)
        )
        self.store.counters.messages_out += 1

    # -- automatic transitions -----------------------------------------------------------------

    async def run_due(self) -> None:
        """Take every chat whose automatic step is due to that step (under the lock)."""
        for chat_id in self.store.due(time.time()):
            chat = self.store.chats[chat_id]
            step_name = chat.step
            step = self.settings.scenario.steps.get(step_name or "")
            chat.auto_due = None
            if step is not None and step.auto is not None:
                try:
                    await self._enter(chat_id, chat, step.auto.goto)
                except Transient:
                    chat.step, chat.auto_due = step_name, time.time()  # still due: try again
                    raise
                except TelegramAPIError as exc:
                    self._on_error(f"automatic step in chat {chat_id}", exc)
            self.store.save()
            self._on_change()

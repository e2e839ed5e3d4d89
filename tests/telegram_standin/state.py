"""What the stand-in remembers: bots, chats, queued updates, sent messages, every call.

One lock (a Condition) guards it all, so the HTTP threads, the long polls waiting on it and the
test's thread see one consistent world; long polls and `wait_for_messages` sleep on the Condition
and wake when an update is queued or a message is sent.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

UPDATE_TYPES = ("message", "callback_query")
# Telegram's documented limits: about one message a second to one chat (short bursts pass) and
# about thirty a second from one bot overall (https://core.telegram.org/bots/faq).
CHAT_RATE_PER_S = 1.0
CHAT_BURST = 3
BOT_PER_SECOND = 30


class ApiError(Exception):
    """A Bot API error answer: `{"ok": false, "error_code", "description", "parameters"?}`."""

    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.retry_after is not None:
            answer["parameters"] = {"retry_after": self.retry_after}
        return answer


def error_for(code: int, retry_after: int = 1) -> ApiError:
    """The error Telegram answers for `code`, with its usual description."""
    if code == 429:
        return ApiError(429, f"Too Many Requests: retry after {retry_after}", retry_after)
    descriptions = {
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        409: "Conflict",
        500: "Internal Server Error",
        502: "Bad Gateway",
    }
    return ApiError(code, descriptions.get(code, "Error"))


@dataclass(frozen=True)
class SentMessage:
    """A message a bot sent, as the test sees it (a snapshot: re-read to see later edits).

    `buttons` are those it was sent with; `keyboard_removed` says an edit took them away since.
    """

    message_id: int
    chat_id: int
    text: str
    buttons: list[tuple[str, str]]
    at: float
    keyboard_removed: bool


@dataclass(frozen=True)
class Call:
    """One request the stand-in received: the Bot API method, when, and its decoded parameters."""

    method: str
    at: float
    params: dict[str, Any]


@dataclass
class StoredMessage:
    """A bot's message as Telegram keeps it (the reply markup can be edited later)."""

    message_id: int
    chat_id: int
    text: str
    date: int
    at: float
    sent_markup: dict[str, Any] | None
    reply_markup: dict[str, Any] | None = None  # the current one, after edits
    keyboard_removed: bool = False

    def __post_init__(self) -> None:
        self.reply_markup = self.sent_markup

    def snapshot(self) -> SentMessage:
        return SentMessage(
            message_id=self.message_id,
            chat_id=self.chat_id,
            text=self.text,
            buttons=buttons_of(self.sent_markup),
            at=self.at,
            keyboard_removed=self.keyboard_removed,
        )


def buttons_of(markup: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The inline keyboard's buttons, row by row, as (text, callback_data)."""
    if not markup:
        return []
    return [
        (button.get("text", ""), button.get("callback_data", ""))
        for row in markup.get("inline_keyboard", [])
        for button in row
    ]


@dataclass
class Chat:
    """A private chat between one user and one bot; message ids are shared by both sides."""

    chat_id: int
    first_name: str
    next_message_id: int = 1
    blocked: bool = False

    def take_message_id(self) -> int:
        message_id = self.next_message_id
        self.next_message_id += 1
        return message_id


class Bucket:
    """A token bucket: `burst` sends at once, refilled at `rate` per second."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.last = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now

    def wait_s(self) -> int:
        """0 when a send may go now, else whole seconds until it may (Telegram's retry_after)."""
        self._refill()
        if self.tokens >= 1:
            return 0
        return max(1, math.ceil((1 - self.tokens) / self.rate))

    def spend(self) -> None:
        self._refill()
        self.tokens -= 1


class Window:
    """At most `limit` sends in any one-second window."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent: deque[float] = deque()

    def wait_s(self) -> int:
        now = time.monotonic()
        while self.sent and self.sent[0] <= now - 1:
            self.sent.popleft()
        return 0 if len(self.sent) < self.limit else 1

    def spend(self) -> None:
        self.sent.append(time.monotonic())


@dataclass
class BotAccount:
    """One bot registered with the stand-in: its user, chats, update queue and history."""

    token: str
    user_id: int
    username: str
    first_name: str
    revoked: bool = False
    chats: dict[int, Chat] = field(default_factory=dict)
    updates: deque[dict[str, Any]] = field(default_factory=deque)
    next_update_id: int = 1000
    allowed_updates: list[str] = field(default_factory=list)
    messages: list[StoredMessage] = field(default_factory=list)
    open_callbacks: dict[str, int] = field(default_factory=dict)
    answered_callbacks: list[str] = field(default_factory=list)
    poll_generation: int = 0
    chat_buckets: dict[int, Bucket] = field(default_factory=dict)
    bot_window: Window = field(default_factory=lambda: Window(BOT_PER_SECOND))

    def user(self) -> dict[str, Any]:
        """The bot as a Bot API `User` (what getMe answers and a message's `from`)."""
        return {
            "id": self.user_id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
        }

    def take_update_id(self) -> int:
        update_id = self.next_update_id
        self.next_update_id += 1
        return update_id

    def find_message(self, chat_id: int, message_id: int) -> StoredMessage | None:
        for message in reversed(self.messages):
            if message.chat_id == chat_id and message.message_id == message_id:
                return message
        return None


class World:
    """Every bot's state behind one Condition; the HTTP methods and the test API both use it."""

    def __init__(self, *, enforce_flood: bool = False) -> None:
        self.cond = threading.Condition()
        self.enforce_flood = enforce_flood
        self.bots: dict[str, BotAccount] = {}
        self.calls: dict[str, list[Call]] = {}
        self.failures: dict[tuple[str, str], list[ApiError]] = {}
        self.closing = False
        self._callback_ids = itertools.count(1)
        self._bot_ids = itertools.count(7_000_000_001)

    def next_callback_id(self) -> str:
        return f"{next(self._callback_ids)}{int(time.time() * 1000) % 100000:05d}"

    def next_bot_id(self) -> int:
        return next(self._bot_ids)

"""Talking to Telegram: the Bot API client in use, and how each call is retried.

A 429 `retry_after` is waited out (for every send: `flood.FloodPacer.hold`) and the same call
retried; network errors and 5xx are retried a few times, then raised as `Transient`; 401 fails
the bot (`platform_unauthorized`). A client replaced by a new token or api_url is closed only
when the bot ends, since a call may still be using it. The token is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiogram import Bot as TelegramClient
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.utils.token import TokenValidationError, validate_token

from botfleet.runtime.bot import BotFailed
from botfleet.runtime.bots.telegram.flood import FloodPacer

T = TypeVar("T")

MAX_RETRY_AFTER = 10  # 429s in a row on one call before giving up on it
MAX_TRANSIENT = 3  # network or 5xx failures in a row on one call before giving up on it


class Transient(Exception):
    """Telegram could not be reached (or answered 5xx) on every retry: try again later."""


def connect(token: str | None, api_url: str) -> TelegramClient:
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


class BotApi:
    """The client calls go through, the ones it replaced, and every call's retries.

    `scrub` takes the token out of a text; `unauthorized` turns Telegram's refusal of the token
    into the bot's permanent failure (which it raises).
    """

    def __init__(
        self,
        pacer: FloodPacer,
        log: logging.Logger,
        *,
        scrub: Callable[[str], str],
        unauthorized: Callable[[str], BotFailed],
    ) -> None:
        self._pacer = pacer
        self._log = log
        self._scrub = scrub
        self._unauthorized = unauthorized
        self._client: TelegramClient | None = None
        self._retired: list[TelegramClient] = []  # replaced clients, closed when the bot ends

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def client(self) -> TelegramClient:
        if self._client is None:
            raise RuntimeError("the telegram bot has not started")
        return self._client

    def use(self, client: TelegramClient) -> None:
        """Make `client` the one calls go through; the one it replaces is retired."""
        if self._client is not None:
            self._retired.append(self._client)
        self._client = client

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """One Bot API call: 429 waits `retry_after` (for every send) and retries the same call,
        network errors and 5xx retry a few times (then `Transient`), 401 fails the bot."""
        retry_after = transient = 0
        while True:
            await self._pacer.wait_hold()
            try:
                return await make()
            except TelegramRetryAfter as exc:
                retry_after += 1
                if retry_after > MAX_RETRY_AFTER:
                    raise
                self._log.warning("Telegram says 429: retry after %ss", exc.retry_after)
                self._pacer.hold(exc.retry_after)
            except TelegramUnauthorizedError as exc:
                raise self._unauthorized(f"Telegram refused the bot_token: {exc}") from None
            except (TelegramNetworkError, TelegramServerError) as exc:
                transient += 1
                if transient >= MAX_TRANSIENT:
                    raise Transient(self._scrub(f"{type(exc).__name__}: {exc}")) from None
                await asyncio.sleep(0.5 * 2**transient)

    async def close(self) -> None:
        """Close every client's session, the retired ones and the current one."""
        clients = [*self._retired, *([self._client] if self._client else [])]
        self._retired.clear()
        for client in clients:
            with contextlib.suppress(Exception):
                await client.session.close()

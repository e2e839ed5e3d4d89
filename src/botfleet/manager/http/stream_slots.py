"""How many long-lived streams (`/events`, `/bots/{id}/logs?follow=1`) one API key holds open.

A stream holds no database connection and no thread, but it does hold a socket, a task and
its polling: without a bound, one key could open thousands. Counts live in this process (each
replica bounds its own streams; `BOTFLEET_MAX_STREAMS_PER_KEY`).

A route decides before it answers (a refusal must be a 429, not a broken stream), and the slot
is freed when the stream's body ends, however it ends:

    slot = acquire_stream_slot(key_id, limit)          # raises TooMany(ErrorCode.TOO_MANY_STREAMS)
    return StreamingResponse(slot.hold(body_iterator))  # released when the body ends

or, where the whole stream lives inside one coroutine, `async with stream_slot(key_id, limit)`.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from botfleet.manager.core.errors import ErrorCode, TooMany
from botfleet.manager.core.secrets import digest

T = TypeVar("T")

_open: Counter[str] = Counter()
_lock = threading.Lock()  # the counter is touched from the event loop and from threads


def key_id_for_token(token: str) -> str:
    """A stable, non-secret id of an API key (its digest), for callers that hold only the token."""
    return digest(token)


def open_streams(key_id: str) -> int:
    with _lock:
        return _open[key_id]


class StreamSlot:
    """One open stream of one key; `release()` is idempotent."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        self._held = True

    def release(self) -> None:
        with _lock:
            if not self._held:
                return
            self._held = False
            _open[self.key_id] -= 1
            if _open[self.key_id] <= 0:
                del _open[self.key_id]

    async def hold(self, body: AsyncIterator[T]) -> AsyncIterator[T]:
        """`body`, releasing the slot when it ends, fails or the client goes away."""
        try:
            async for item in body:
                yield item
        finally:
            self.release()
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()


def acquire_stream_slot(key_id: str, limit: int) -> StreamSlot:
    """A slot for one more stream of `key_id`, or 429 `too_many_streams` at `limit`."""
    with _lock:
        if _open[key_id] >= limit:
            raise TooMany(
                ErrorCode.TOO_MANY_STREAMS,
                f"this API key already has {limit} open streams; close one first",
                limit=limit,
            )
        _open[key_id] += 1
    return StreamSlot(key_id)


@asynccontextmanager
async def stream_slot(key_id: str, limit: int) -> AsyncIterator[StreamSlot]:
    """`acquire_stream_slot` as an async context manager."""
    slot = acquire_stream_slot(key_id, limit)
    try:
        yield slot
    finally:
        slot.release()

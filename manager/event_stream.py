"""Wakes this replica's event streams when any replica commits events (Redis fan-out)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

import redis

from manager.events import WAKE_CHANNEL

log = logging.getLogger(__name__)


class EventWaker:
    """A thread subscribed to `botfleet:events`; streams await `wait()` between reads.

    Missing a wake-up costs at most the streams' poll interval, so Redis being down only slows
    the streams down.
    """

    def __init__(self, redis_url: str, loop: asyncio.AbstractEventLoop) -> None:
        self._url = redis_url
        self._loop = loop
        self._event = asyncio.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="event-waker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)

    def _wake(self) -> None:
        self._event.set()
        self._event = asyncio.Event()  # the next waiters wait for the next wake-up

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                client = redis.Redis.from_url(self._url, socket_connect_timeout=2)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(WAKE_CHANNEL)
                while not self._stop.is_set():
                    if pubsub.get_message(timeout=1.0) is not None:
                        self._loop.call_soon_threadsafe(self._wake)
                pubsub.close()
                client.close()
            except redis.RedisError as exc:
                log.debug("event wake-ups unavailable (%s); streams poll meanwhile", exc)
                self._stop.wait(2.0)

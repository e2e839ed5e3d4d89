"""The `GET /events` stream: what a viewer reads from the outbox, framed as Server-Sent Events,
and the Redis wake-ups that tell this replica's streams to read (any replica may commit)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.models import Event, utcnow
from botfleet.manager.messaging.outbox import WAKE_CHANNEL, latest_event_id

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


POLL_S = 2.0  # the fallback when no wake-up arrives
#: PostgreSQL hands out ids before commit, so a lower id can appear after a higher one: a gap
#: younger than this is waited for, an older one is a rolled-back transaction and is skipped.
SETTLE_S = 5.0
KEEPALIVE_S = 15.0
#: Outbox rows read per query: `since=0` on a large outbox walks it a batch at a time, each in
#: its own short session, and the stream yields to the event loop between batches.
BATCH = 500


def _named(event: Event) -> dict[str, object]:
    """The event's data, naming its bot whatever its kind (`bot_id` first, as recorded)."""
    return {"bot_id": event.bot_id, **event.data}


class EventFeed:
    """One viewer's stream (`user_id` None: the admin, every bot's events). It reads in short
    sessions of its own, one per batch: a stream lasts far longer than any transaction should."""

    def __init__(self, sessions: sessionmaker[Session], *, user_id: str | None) -> None:
        self.sessions, self.user_id = sessions, user_id

    def read(self, after: int) -> list[tuple[int, str, dict[str, object]]]:
        """Events after `after`, stopping before a gap that may still fill (see SETTLE_S).
        Ids are global, so a gap is judged on all events, not only the viewer's; another
        user's event comes back with an empty kind: it advances the cursor, never sent."""
        with self.sessions() as session:
            # Ids, times and owners only: another user's event body is never loaded.
            heads = session.execute(
                select(Event.id, Event.at, Event.user_id)
                .where(Event.id > after)
                .order_by(Event.id)
                .limit(BATCH)
            ).all()
            kept, expected = [], after + 1
            settled_before = utcnow() - timedelta(seconds=SETTLE_S)
            for event_id, at, user_id in heads:
                if event_id != expected and at > settled_before:
                    break
                expected = event_id + 1
                kept.append((event_id, self.user_id is None or user_id == self.user_id))
            wanted = [event_id for event_id, visible in kept if visible]
            bodies = (
                {e.id: e for e in session.scalars(select(Event).where(Event.id.in_(wanted)))}
                if wanted
                else {}
            )
            return [
                (event_id, bodies[event_id].kind, _named(bodies[event_id]))
                if visible
                else (event_id, "", {})
                for event_id, visible in kept
            ]

    def newest(self) -> int:
        with self.sessions() as session:
            return latest_event_id(session)

    async def stream(
        self,
        start: int | None,
        *,
        waker: EventWaker,
        is_disconnected: Callable[[], Awaitable[bool]],
    ) -> AsyncIterator[str]:
        """SSE text from after `start` (None: from now on) until the client leaves."""
        after = start if start is not None else await asyncio.to_thread(self.newest)
        yield ": botfleet events\n\n"
        quiet = 0.0
        while not await is_disconnected():
            rows = await asyncio.to_thread(self.read, after)
            if rows:
                after = rows[-1][0]
            # A batch goes out as one write. Event by event, the writes of a batch would follow
            # one another without the event loop running in between, so it would not see a
            # client that left meanwhile: every later write to the closed socket would log
            # asyncio's "socket.send() raised exception" (hundreds per disconnect). Between
            # batches the loop runs (the read above) and the check above ends the stream.
            chunk = "".join(
                f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"
                for event_id, kind, data in rows
                if kind
            )
            if chunk:
                quiet = 0.0
                yield chunk
            if rows:  # more may follow at once
                continue
            await waker.wait(POLL_S)
            quiet += POLL_S
            if quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield ": keep-alive\n\n"

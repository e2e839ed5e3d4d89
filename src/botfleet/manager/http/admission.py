"""Admission: at most as many requests work at once as the database pool can serve, bots'
callbacks keep places of their own, and nobody waits for a place forever.

A request holds its one database transaction from its dependencies to its answer (api/deps.py),
while FastAPI runs the dependencies and the route on worker threads, one after the other. With
more requests in flight than pooled connections, the threads fill up with requests waiting for a
connection while the requests holding the connections wait for a thread: nothing moves until the
pool's timeout fails them all (a burst of 200 POST /bots did exactly that). Requests therefore
wait here first, on the event loop and without a thread, until one of the pool's places is free;
the places never outnumber the pool or the thread pool, so an admitted request always finishes.

The places are split in two. Bots' callbacks (`/internal/…`) have `reserved` places users can
never take, and may also borrow a free users' place: a user flooding the API fills the users'
places, and heartbeats still land (a heartbeat that cannot be recorded is how healthy bots get
reaped). A request that finds no place within `wait_s` answers 503 `database_busy` with
Retry-After instead of queueing without bound.

Streams that stay open (`/events`) and the probes that need no transaction are not counted.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from botfleet.manager.core.errors import database_busy

log = logging.getLogger(__name__)

#: Paths that do not hold a transaction for their whole life.
EXEMPT_PATHS = frozenset({"/events", "/healthz", "/metrics"})


_FOLLOW_ON = frozenset({b"follow=1", b"follow=true", b"follow=on", b"follow=yes"})


def _is_log_stream(scope: Scope) -> bool:
    """`GET /bots/{id}/logs?follow=1`: a stream that closes its session before it streams."""
    path, query = scope["path"], scope.get("query_string", b"")
    return (
        path.startswith("/bots/")
        and path.endswith("/logs")
        and any(part.lower() in _FOLLOW_ON for part in query.split(b"&"))
    )


#: Bots' callbacks: the paths that may use the reserved places.
INTERNAL_PREFIX = "/internal/"

REFUSED = Counter(
    "botfleet_admission_refused_total",
    "Requests answered 503 database_busy because no place came free in time",
    ["caller"],
)


class DatabaseAdmission:
    """ASGI middleware: `limit` places in all, `reserved` of them for bots' callbacks."""

    def __init__(self, app: ASGIApp, limit: int, reserved: int, wait_s: float) -> None:
        if not 0 < reserved < limit:
            raise ValueError(
                f"places reserved for bots ({reserved}) must be at least 1 and below the pool "
                f"size ({limit}): see BOTFLEET_DB_RESERVED_FOR_BOTS"
            )
        self.app = app
        self.users = asyncio.Semaphore(limit - reserved)
        self.bots = asyncio.Semaphore(reserved)
        self.wait_s = wait_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS or _is_log_stream(scope):
            await self.app(scope, receive, send)
            return
        is_bot = scope["path"].startswith(INTERNAL_PREFIX)
        place = await self._take(is_bot)
        if place is None:
            REFUSED.labels("bot" if is_bot else "user").inc()
            await database_busy()(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            place.release()

    async def _take(self, is_bot: bool) -> asyncio.Semaphore | None:
        """A place (the semaphore to release), or None after `wait_s` without one.

        A callback takes a free users' place when there is one (they are idle), else waits
        for its own; a user waits for a users' place only.
        """
        if is_bot and not self.users.locked():
            await self.users.acquire()  # free: returns without yielding to another task
            return self.users
        wanted = self.bots if is_bot else self.users
        try:
            await asyncio.wait_for(wanted.acquire(), self.wait_s)
        except TimeoutError:
            return None
        return wanted

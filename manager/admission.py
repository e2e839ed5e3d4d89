"""Admission: at most as many requests work at once as the database pool can serve.

A request holds its one database transaction from its dependencies to its answer (api/deps.py),
while FastAPI runs the dependencies and the route on worker threads, one after the other. With
more requests in flight than pooled connections, the threads fill up with requests waiting for a
connection while the requests holding the connections wait for a thread: nothing moves until the
pool's timeout fails them all (a burst of 200 POST /bots did exactly that). Requests therefore
wait here first, on the event loop and without a thread, until one of `limit` places is free;
`limit` is below both the pool and the thread pool, so an admitted request always finishes.

Streams that stay open (`/events`) and the probes that need no transaction are not counted.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

#: Paths that do not hold a transaction for their whole life.
EXEMPT_PATHS = frozenset({"/events", "/healthz", "/metrics"})


class DatabaseAdmission:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.places = asyncio.Semaphore(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        async with self.places:
            await self.app(scope, receive, send)

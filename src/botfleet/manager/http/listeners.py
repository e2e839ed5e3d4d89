"""The manager's two listeners: users' API and dashboard on one port, bots' callbacks on another.

Bots are someone else's code: one that leaks connections, or holds them open sending a request
head a byte at a time, must not take the places users' requests need. So each listener has its
own cap of open connections (`GuardedConnections`: past it a new connection is answered 503 and
closed at once, before it costs more than a descriptor for an instant), an optional cap per
client address, and a bound on the time a connection may take to send a whole request head
(h11 and httptools have none: a slow-header connection stayed open for as long as it trickled).

Which routes each port serves (`PathGate`): `/internal/…` only on the callback port, everything
else only on the API port; the other answers 404. On the callback port a connection becomes a
bot's once one of its requests was answered (`BotConnections`): a bot keeps at most
`per_bot` of them, the answer to a request on one more carries `connection: close`, and so
does the answer to a request that was refused (401, 403, 404).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import Counter
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from botfleet.manager.core.errors import ErrorCode, error_body
from botfleet.manager.core.listener_health import ListenerHealth

log = logging.getLogger(__name__)

INTERNAL_PREFIX = "/internal/"
_BOT_PREFIX = "/internal/bots/"
_FULL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)
_REFUSED_STATUSES = frozenset({401, 403, 404})


def _full_response(listener: str) -> bytes:
    body = json.dumps(
        error_body(ErrorCode.LISTENER_FULL, f"the {listener} port holds no more connections")
    ).encode()
    return _FULL % (len(body), body)


class ConnectionBook:
    """Open connections of one listener, in all and per client address (event loop only)."""

    def __init__(
        self,
        name: str,
        *,
        max_connections: int,
        max_per_address: int = 0,
        health: ListenerHealth | None = None,
    ) -> None:
        self.name = name
        self.max_connections, self.max_per_address = max_connections, max_per_address
        self.health = health
        self.open = 0
        self.by_address: Counter[str] = Counter()
        self.turned_away = 0
        self.refusal = _full_response(name)
        if health is not None:
            health.configure(max_connections)

    def admit(self, address: str) -> bool:
        """Count the connection in, or say no (the listener or this address is full)."""
        if self.open >= self.max_connections:
            self.turned_away += 1
            if self.health is not None:
                self.health.turned_away()
            return False
        if self.max_per_address and self.by_address[address] >= self.max_per_address:
            self.turned_away += 1  # this address' own limit: the listener can still accept
            return False
        self.open += 1
        self.by_address[address] += 1
        self._report()
        return True

    def leave(self, address: str) -> None:
        self.open -= 1
        self.by_address[address] -= 1
        if self.by_address[address] <= 0:
            del self.by_address[address]
        self._report()

    def _report(self) -> None:
        if self.health is not None:
            self.health.opened(self.open)


class BotConnections:
    """Which bot each callback connection belongs to (keyed by the client's address and port),
    and how many each bot holds. Written on the event loop; read under a lock by /readyz."""

    def __init__(self, per_bot: int) -> None:
        self.per_bot = per_bot
        self._owner: dict[tuple[str, int], str] = {}
        self._held: Counter[str] = Counter()
        self._mutex = threading.Lock()

    def claim(self, connection: tuple[str, int], bot_id: str) -> bool:
        """The connection served `bot_id`: True when the bot may keep it open."""
        with self._mutex:
            owner = self._owner.get(connection)
            if owner == bot_id:
                return True
            if self._held[bot_id] >= self.per_bot:
                return False
            if owner is not None:  # one client serving several bots (a proxy, a test)
                self._drop(connection, owner)
            self._owner[connection] = bot_id
            self._held[bot_id] += 1
            return True

    def release(self, connection: tuple[str, int]) -> None:
        with self._mutex:
            owner = self._owner.get(connection)
            if owner is not None:
                self._drop(connection, owner)

    def held(self, bot_id: str) -> int:
        with self._mutex:
            return self._held[bot_id]

    def _drop(self, connection: tuple[str, int], owner: str) -> None:
        del self._owner[connection]
        self._held[owner] -= 1
        if self._held[owner] <= 0:
            del self._held[owner]


def guarded_protocol(
    base: type[asyncio.Protocol],
    book: ConnectionBook,
    *,
    header_timeout_s: float,
    bots: BotConnections | None = None,
) -> type[asyncio.Protocol]:
    """`base` (uvicorn's h11 or httptools protocol) with the listener's caps and a bound on the
    time a request head may take, counted from when the connection opens or its previous answer
    ended. Both of uvicorn's protocols keep the request being served in `cycle`."""
    parent: Any = base

    class GuardedConnection(parent):
        _address: str | None = None
        _peer: tuple[str, int] | None = None
        _head_timer: asyncio.TimerHandle | None = None
        _head_waited_for: object = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            peer = transport.get_extra_info("peername")
            address = str(peer[0]) if isinstance(peer, tuple) else ""
            if not book.admit(address):
                self._turn_away(transport)
                return
            self._address = address
            self._peer = (address, int(peer[1])) if isinstance(peer, tuple) else None
            super().connection_made(transport)
            self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._address is None:
                return  # turned away: uvicorn never saw it
            book.leave(self._address)
            self._address = None
            if bots is not None and self._peer is not None:
                bots.release(self._peer)
            self._cancel_head_timer()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_head()

        def _turn_away(self, transport: asyncio.BaseTransport) -> None:
            with contextlib.suppress(OSError, RuntimeError):
                transport.write(book.refusal)  # type: ignore[attr-defined]
            transport.close()

        def _await_head(self) -> None:
            """A new request head is due within the bound (the one being served, if any, is
            `cycle`; a new head replaces it)."""
            self._cancel_head_timer()
            self._head_waited_for = self.cycle
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_overdue)

        def _head_overdue(self) -> None:
            self._head_timer = None
            cycle = self.cycle
            busy = cycle is not None and not cycle.response_complete
            if cycle is self._head_waited_for and not busy and not self.transport.is_closing():
                self.transport.close()

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

    GuardedConnection.__name__ = f"Guarded{base.__name__}"
    return GuardedConnection


class PathGate:
    """Serve only `/internal/…` (`internal=True`, the callback port) or everything else (the
    API port); the other paths answer 404. On the callback port, `bots` keeps each bot's open
    connections to its cap (see `BotConnections`)."""

    def __init__(self, app: ASGIApp, *, internal: bool, bots: BotConnections | None = None) -> None:
        self.app, self.internal, self.bots = app, internal, bots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan
            return
        path: str = scope.get("path", "")
        if path.startswith(INTERNAL_PREFIX) != self.internal:
            await _not_here(scope, send)
            return
        client = scope.get("client")
        if self.bots is None or scope["type"] != "http" or not client:
            await self.app(scope, receive, send)
            return
        connection = (str(client[0]), int(client[1]))
        bot_id = _bot_of(path)
        bots = self.bots

        async def answering(message: Message) -> None:
            if message["type"] == "http.response.start" and bot_id is not None:
                status = int(message["status"])
                refused = status in _REFUSED_STATUSES
                if refused or (status < 400 and not bots.claim(connection, bot_id)):
                    headers = [*message.get("headers", []), (b"connection", b"close")]
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, answering)


def _bot_of(path: str) -> str | None:
    if not path.startswith(_BOT_PREFIX):
        return None
    bot_id = path[len(_BOT_PREFIX) :].split("/", 1)[0]
    return bot_id or None


async def _not_here(scope: Scope, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps(error_body(ErrorCode.NOT_FOUND, "Not Found")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

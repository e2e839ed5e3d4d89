"""Subscribe to one Redis channel: the little of Redis a bot uses (AUTH, SUBSCRIBE, PING).

Why not redis-py: `import redis` loads its whole client (commands, cluster, parsers, and
observability hooks), about 11 MiB of RSS in every bot process, for a connection that only ever
subscribes. A bot's Redis user may run nothing but SUBSCRIBE, UNSUBSCRIBE and PING anyway. This
speaks RESP2 on an asyncio stream; `ssl` is imported only for a rediss:// URL.

A connection that answers nothing for two health-check periods (a PING is sent after the first)
counts as dead, so a silently dropped connection is noticed without TCP keepalive's hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

CONNECT_TIMEOUT_S = 5.0


class RedisError(Exception):
    """Redis refused something (an error reply) or the connection failed."""


class RedisConnectionError(RedisError):
    """The connection could not be made, was lost, or stopped answering."""


class Subscription:
    """One connection subscribed to channels; `get_message` reads what is published."""

    def __init__(self, url: str, *, health_check_s: float) -> None:
        self._url = url
        self._health_check_s = health_check_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pinged = False  # a health-check PING is unanswered
        # The read in progress survives a get_message that timed out, so a reply arriving
        # at that moment is never cut in half.
        self._pending: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> Subscription:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def connect(self) -> None:
        target = parse_url(self._url)
        try:
            if target["path"]:
                opened = asyncio.open_unix_connection(target["path"])
            else:
                opened = asyncio.open_connection(
                    target["host"], target["port"], ssl=_tls_context() if target["tls"] else None
                )
            reader, writer = await asyncio.wait_for(opened, CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc or 'timed out'}") from None
        self._reader, self._writer = reader, writer
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if target["password"] is not None:
            auth = [target["username"], target["password"]] if target["username"] else []
            await self._command("AUTH", *(auth or [target["password"]]))
        if target["db"]:
            await self._command("SELECT", str(target["db"]))

    async def subscribe(self, *channels: str) -> None:
        self._send("SUBSCRIBE", *channels)
        for _ in channels:
            reply = await self._read_reply()
            if not (isinstance(reply, list) and reply and reply[0] == b"subscribe"):
                raise RedisError(f"unexpected answer to SUBSCRIBE: {reply!r:.200}")

    async def get_message(self, timeout: float) -> dict[str, Any] | None:
        """The next published message as `{"type": "message", "channel", "data"}` (bytes), or
        None when nothing came within `timeout` or what came was not a message."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._read_reply())
        done, _ = await asyncio.wait({self._pending}, timeout=min(timeout, self._health_check_s))
        if not done:
            if self._pinged:
                raise RedisConnectionError("Redis stopped answering (health check)")
            self._send("PING")
            self._pinged = True
            return None
        pending, self._pending = self._pending, None
        reply = pending.result()
        self._pinged = False
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
            return {"type": "message", "channel": reply[1], "data": reply[2]}
        return None  # a PONG, or a (un)subscribe confirmation

    async def aclose(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _command(self, *args: str) -> Any:
        self._send(*args)
        return await self._read_reply()

    def _send(self, *args: str) -> None:
        if self._writer is None or self._writer.is_closing():
            raise RedisConnectionError("the Redis connection is closed")
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self._writer.write(b"".join(out))

    async def _read_reply(self) -> Any:
        if self._reader is None:
            raise RedisConnectionError("the Redis connection is closed")
        try:
            return await _read_resp(self._reader)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            detail = str(exc) or type(exc).__name__
            raise RedisConnectionError(f"Redis connection lost: {detail}") from None


async def _read_resp(reader: asyncio.StreamReader) -> Any:
    """One RESP2 value; an error reply raises RedisError with Redis' own text."""
    line = await reader.readuntil(b"\r\n")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RedisError(rest.decode("utf-8", errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else (await reader.readexactly(size + 2))[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [await _read_resp(reader) for _ in range(count)]
    raise RedisConnectionError(f"not a RESP reply: {line[:40]!r}")


def parse_url(url: str) -> dict[str, Any]:
    """redis://[user[:password]@]host[:port][/db], rediss://… (TLS) or unix:///path?db=N;
    `?password=` and `?db=` are honoured as redis-py does."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise RedisError("the Redis URL must start with redis://, rediss:// or unix://")
    password = unquote(parts.password) if parts.password is not None else query.get("password")
    username = unquote(parts.username) if parts.username else query.get("username")
    db = query.get("db") or (parts.path.strip("/") if parts.scheme != "unix" else "") or "0"
    if not db.isdigit():
        raise RedisError("the Redis URL's database must be a number")
    return {
        "tls": parts.scheme == "rediss",
        "host": parts.hostname or "localhost",
        "port": parts.port or 6379,
        "path": parts.path if parts.scheme == "unix" else "",
        "username": username or None,
        "password": password,
        "db": int(db),
    }


def _tls_context() -> Any:
    import ssl

    return ssl.create_default_context()

"""A small HTTP/1.1 client for the runtime's few calls to the manager (JSON in, JSON out).

Why not httpx: importing httpx (with httpcore, anyio, h11, idna, email, certifi and, where they
are installed, its CLI's rich/click/pygments) costs every bot process about 9 MiB of RSS, more
than the rest of the runtime; these calls need a fraction of it. This client speaks plain
HTTP/1.1 on asyncio streams, keeps idle connections for reuse, and imports `ssl` only for an
https callback URL (then with certifi's CA bundle when it is installed, as httpx did).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

USER_AGENT = "botfleet-runtime"
MAX_HEADER_LINES = 100
MAX_BODY = 64 * 1024 * 1024  # far above any answer of the manager; bounds a runaway peer


class TransportError(Exception):
    """The request did not get an answer: connection refused or lost, timeout, garbled reply."""


@dataclass
class Response:
    status_code: int
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased

    @property
    def is_error(self) -> bool:
        return self.status_code >= 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def usable(self) -> bool:
        return not (self.reader.at_eof() or self.writer.is_closing())

    def close(self) -> None:
        self.writer.close()


class HttpClient:
    """Requests to one base URL with fixed headers; `timeout_s` bounds each whole request."""

    def __init__(self, *, base_url: str, headers: dict[str, str], timeout_s: float) -> None:
        parts = urlsplit(base_url)
        # Like httpx, a URL that cannot be called fails each request (as a transport error),
        # not the construction: the runtime still starts and logs why the manager is unreachable.
        self._unusable = None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self._unusable = "the callback URL must be an http:// or https:// URL with a host"
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        default_port = self._port == (443 if self._tls else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._headers = {
            "Host": host if default_port else f"{host}:{self._port}",
            "User-Agent": USER_AGENT,
            "Accept": "*/*",
            **headers,
        }
        self._timeout_s = timeout_s
        self._idle: list[_Conn] = []
        self._ssl_context: Any = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Response:
        # Percent-encoded like httpx does: no space or line break can reach the request line.
        target = quote(self._prefix + path, safe="/%:@!$&'()*+,;=~")
        target += f"?{urlencode(params)}" if params else ""
        head = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in self._headers.items())]
        body = b""
        if json is not None:
            body = jsonlib.dumps(
                json, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode()
            head.append("Content-Type: application/json")
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        if self._unusable:
            raise TransportError(self._unusable)
        try:
            return await asyncio.wait_for(self._exchange(method, raw), self._timeout_s)
        except TimeoutError:
            raise TransportError(f"no answer within {self._timeout_s}s") from None

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def _exchange(self, method: str, raw: bytes) -> Response:
        """Send on an idle connection if one is alive, else on a new one. A reused connection
        the server closed meanwhile (its keep-alive ran out) fails before any answer byte: that
        request is sent once more on a new connection, as browsers and httpx do."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.usable():
                conn.close()
                continue
            try:
                return await self._send(conn, method, raw)
            except _StaleConnection:
                conn.close()
        conn = await self._connect()
        try:
            return await self._send(conn, method, raw)
        except _StaleConnection:
            conn.close()
            raise TransportError("the server closed the connection without answering") from None

    async def _connect(self) -> _Conn:
        try:
            reader, writer = await asyncio.open_connection(
                self._host, self._port, ssl=self._tls_context() if self._tls else None
            )
        except OSError as exc:
            raise TransportError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        return _Conn(reader, writer)

    def _tls_context(self) -> Any:
        """Only an https callback URL pays for ssl; certifi's CAs when present, like httpx."""
        if self._ssl_context is None:
            import ssl

            try:
                import certifi

                cafile: str | None = certifi.where()
            except ImportError:
                cafile = None
            self._ssl_context = ssl.create_default_context(cafile=cafile)
        return self._ssl_context

    async def _send(self, conn: _Conn, method: str, raw: bytes) -> Response:
        keep = False
        try:
            try:
                conn.writer.write(raw)
                await conn.writer.drain()
                status_line = await conn.reader.readline()
            except OSError as exc:
                raise _StaleConnection from exc
            if not status_line:
                raise _StaleConnection
            response, keep = await self._read_response(conn.reader, status_line, method)
            return response
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            if keep:
                self._idle.append(conn)
            else:
                conn.close()

    async def _read_response(
        self, reader: asyncio.StreamReader, status_line: bytes, method: str
    ) -> tuple[Response, bool]:
        """(the response, whether the connection may be reused)."""
        version, _, rest = status_line.decode("latin-1").partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise ValueError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(code)
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADER_LINES):
            line = (await reader.readline()).decode("latin-1").rstrip("\r\n")
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise ValueError("too many header lines")
        keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            content = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            content = await _read_chunked(reader)
        elif (length := headers.get("content-length")) is not None:
            size = int(length)
            if not 0 <= size <= MAX_BODY:
                raise ValueError(f"bad Content-Length {length!r}")
            content = await reader.readexactly(size)
        else:  # delimited by the end of the connection
            content, keep = await reader.read(MAX_BODY), False
        return Response(status, content, headers), keep


class _StaleConnection(Exception):
    """Nothing came back on the connection: the server had closed it."""


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"x", 16)
        if size == 0:
            while (await reader.readline()).strip():  # trailers, up to the blank line
                pass
            return b"".join(parts)
        total += size
        if total > MAX_BODY:
            raise ValueError("chunked body too large")
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)  # the CRLF after each chunk

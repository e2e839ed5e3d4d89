"""How the CLI speaks HTTP: the standard library's http.client on a direct connection, httpx
where anything more is needed.

Importing httpx and httpcore was a third of a simple command's time (issue 29: under 0.3 s);
importing http.client costs a fifth of that. A direct connection (http or https, no proxy in the
environment, no credentials in the URL) is the usual case, and `PlainClient`'s: keep-alive
connections, the same timeouts, TLS verified against the certificates httpx trusts
(SSL_CERT_FILE, SSL_CERT_DIR, else certifi's, which comes with httpx), the same answers (status,
reason, text, JSON, a stream's lines). Anything else goes through httpx as it always did
(`botfleet.cli.httpx_client`). Both raise `TransportError`, with the reason `Unreachable` shows.
tests/integration/cli/test_cli_transport.py runs the same requests through both.
"""

from __future__ import annotations

import codecs
import json as jsonlib
import os
import select
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

if TYPE_CHECKING:
    import http.client
    import ssl

    from botfleet.cli.httpx_client import HttpxClient

Params = list[tuple[str, str | int]] | dict[str, str | int] | None
#: True: every client goes through httpx (a test's stand-in API is an httpx.MockTransport).
USE_HTTPX = False
PROXIES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
USER_AGENT = "botfleet-cli"
#: What a path keeps unescaped, as httpx does (its other characters are percent-encoded).
PATH_SAFE = "/!$&'()*+,;=:@%"
NEWLINES = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # str.splitlines', as httpx splits lines


class TransportError(Exception):
    """No HTTP answer at all: `reason` in a few words (connection refused, timed out, …)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def client_for(url: str, headers: dict[str, str], timeout: float) -> PlainClient | HttpxClient:
    """The client for `url`: a `PlainClient` for a direct connection, else an `HttpxClient`."""
    if USE_HTTPX or not _direct(url):
        from botfleet.cli.httpx_client import HttpxClient

        return HttpxClient(url, headers, timeout)
    return PlainClient(url, headers, timeout)


def _direct(url: str) -> bool:
    """A URL http.client reaches as httpx would: no proxy from the environment (nor, on macOS
    and Windows, from the system's settings), no credentials in it, an ASCII host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" in parts.netloc or not parts.netloc.isascii():
        return False
    if any(os.environ.get(name) for name in PROXIES):
        return False
    if sys.platform in ("darwin", "win32"):
        from urllib.request import getproxies

        return not getproxies()
    return True


# ---- answers ---------------------------------------------------------------------------------


class Answer:
    """A whole answer, with the httpx.Response attributes the client reads."""

    def __init__(self, status: int, headers: http.client.HTTPMessage, content: bytes) -> None:
        self.status_code, self.headers, self.content = status, headers, content

    @property
    def is_error(self) -> bool:
        return 400 <= self.status_code <= 599

    @property
    def reason_phrase(self) -> str:
        """The standard phrase of the status, as httpx gives (not the server's own words)."""
        from http import HTTPStatus

        try:
            return HTTPStatus(self.status_code).phrase
        except ValueError:
            return ""

    @property
    def encoding(self) -> str:
        """The Content-Type's charset where Python knows it, else UTF-8 (httpx's default)."""
        charset = self.headers.get_content_charset()
        if charset:
            try:
                return codecs.lookup(charset).name
            except LookupError:
                pass
        return "utf-8"

    @property
    def text(self) -> str:
        return self.content.decode(self.encoding, errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class StreamedAnswer(Answer):
    """An answer read as it arrives (`stream`): its bytes, or its lines, until the end."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        super().__init__(response.status, response.headers, b"")
        self._response = response

    def read(self) -> bytes:
        self.content = b"".join(self.iter_bytes())
        return self.content

    def iter_bytes(self) -> Iterator[bytes]:
        while True:
            with _mapped_errors():
                chunk = self._response.read1(65536)
            if not chunk:
                return
            yield chunk

    def iter_lines(self) -> Iterator[str]:
        """Each line without its ending, split as str.splitlines does (httpx's lines); a `\\r`
        at the end of a chunk waits for the next, which may begin with its `\\n`."""
        decoder = codecs.getincrementaldecoder(self.encoding)(errors="replace")
        pending = ""
        for chunk in self.iter_bytes():
            pending += decoder.decode(chunk)
            lines = pending.splitlines(keepends=True)
            pending = lines.pop() if lines and _unfinished(lines[-1]) else ""
            yield from map(_without_ending, lines)
        pending += decoder.decode(b"", final=True)
        yield from map(_without_ending, pending.splitlines(keepends=True))


def _unfinished(line: str) -> bool:
    return line[-1] not in NEWLINES or line[-1] == "\r"


def _without_ending(line: str) -> str:
    if line.endswith("\r\n"):
        return line[:-2]
    return line[:-1] if line[-1] in NEWLINES else line


# ---- the standard library's client ------------------------------------------------------------


class PlainClient:
    """Requests to one origin over http.client, keeping idle connections for the next."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float) -> None:
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")  # a manager served under a path
        self._headers = {"Accept": "*/*", "User-Agent": USER_AGENT, **headers}
        self._timeout = timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._tls: ssl.SSLContext | None = None

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        timeout = self._timeout
        connection, response = self._send(method, path, params, json, headers, timeout, timeout)
        try:
            with _mapped_errors():
                content = response.read()
        except BaseException:
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            self._idle.append(connection)
        return Answer(response.status, response.headers, content)

    @contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Params = None,
        headers: dict[str, str] | None = None,
        connect_s: float,
        read_s: float | None,
    ) -> Iterator[StreamedAnswer]:
        """The answer as it arrives; `read_s` None waits for ever between two chunks."""
        connection, response = self._send(method, path, params, None, headers, connect_s, read_s)
        try:
            yield StreamedAnswer(response)
        finally:
            connection.close()  # a stream is seldom read to its end: never reused

    def _send(
        self,
        method: str,
        path: str,
        params: Params,
        json: Any,
        headers: dict[str, str] | None,
        connect_s: float,
        read_s: float | None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        target = self._prefix + quote(path, safe=PATH_SAFE)
        if params:
            pairs = params.items() if isinstance(params, dict) else params
            target += "?" + urlencode([(key, _query_value(value)) for key, value in pairs])
        body = None
        sent = {**self._headers, **(headers or {})}
        if json is not None:  # as httpx encodes it (NaN refused)
            text = jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            body = text.encode()
            sent["Content-Type"] = "application/json"
        connection = self._connection(connect_s)
        try:
            connection.sock.settimeout(read_s)  # None: no limit (a quiet log stream)
            with _mapped_errors():
                connection.request(method, target, body=body, headers=sent)
                return connection, connection.getresponse()
        except BaseException:
            connection.close()
            raise

    def _connection(self, connect_s: float) -> http.client.HTTPConnection:
        """An idle connection the server has not closed meanwhile, else a new one."""
        while self._idle:
            idle = self._idle.pop()
            # Readable while idle: the server closed it (or sent what nobody asked for).
            if idle.sock is not None and not select.select([idle.sock], [], [], 0)[0]:
                return idle
            idle.close()
        import http.client

        connection = (
            http.client.HTTPSConnection(
                self._host, self._port, timeout=connect_s, context=self._tls_context()
            )
            if self._https
            else http.client.HTTPConnection(self._host, self._port, timeout=connect_s)
        )
        try:
            connection.connect()
        except TimeoutError as exc:
            raise TransportError("timed out") from exc
        except OSError as exc:  # refused, no such host, TLS refused: httpx's ConnectError
            raise TransportError(connect_failure(str(exc))) from exc
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        """The certificates httpx trusts: SSL_CERT_FILE, else SSL_CERT_DIR, else certifi's."""
        if self._tls is None:
            import ssl

            if cafile := os.environ.get("SSL_CERT_FILE"):
                self._tls = ssl.create_default_context(cafile=cafile)
            elif capath := os.environ.get("SSL_CERT_DIR"):
                self._tls = ssl.create_default_context(capath=capath)
            else:
                import certifi

                self._tls = ssl.create_default_context(cafile=certifi.where())
            self._tls.set_alpn_protocols(["http/1.1"])
        return self._tls


def connect_failure(text: str) -> str:
    """Why a connection failed, in `Unreachable`'s words."""
    return "connection refused" if "refused" in text.lower() else text or "cannot connect"


def _query_value(value: object) -> str:
    """A query value as httpx writes it: JSON's true and false, nothing for None."""
    if value is True or value is False:
        return "true" if value else "false"
    return "" if value is None else str(value)


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """A failure after connecting (sending, or reading the answer) as httpx words it."""
    import http.client

    try:
        yield
    except TimeoutError as exc:
        raise TransportError("timed out") from exc
    except http.client.RemoteDisconnected as exc:
        raise TransportError("Server disconnected without sending a response.") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise TransportError(str(exc) or type(exc).__name__) from exc

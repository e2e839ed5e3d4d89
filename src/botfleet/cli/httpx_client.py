"""The CLI's HTTP through httpx, where a direct connection will not do (a proxy from the
environment, credentials in the URL, …: `botfleet.cli.transport` decides), or where a test's
stand-in API is an httpx.MockTransport (`transport.USE_HTTPX`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from botfleet.cli.transport import Params, TransportError, connect_failure

if TYPE_CHECKING:
    import ssl

    import httpx


class HttpxClient:
    """httpx.Client behind the same calls: proxies from the environment, and the rest."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float) -> None:
        self._httpx = httpx = import_httpx()
        self._client = httpx.Client(
            base_url=url, headers=headers, timeout=timeout, verify=_verify_for(url)
        )

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._mapped_errors():
            return self._client.request(method, path, **kwargs)

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
    ) -> Iterator[httpx.Response]:
        timeout = self._httpx.Timeout(connect_s, read=read_s)
        with (
            self._mapped_errors(),
            self._client.stream(
                method, path, params=params, headers=headers, timeout=timeout
            ) as response,
        ):
            yield response

    @contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        httpx = self._httpx
        try:
            yield
        except httpx.ConnectError as exc:
            raise TransportError(connect_failure(str(exc))) from exc
        except httpx.TimeoutException as exc:
            raise TransportError("timed out") from exc
        except httpx.TransportError as exc:
            raise TransportError(str(exc) or type(exc).__name__) from exc


#: What importing httpx and httpcore loads that a sync client never runs: httpx's own command line
#: (click, pygments, rich.syntax: 40 ms here), and httpcore's support for async code under trio
#: (80 ms, where trio is installed: selenium brings it into the dev environment).
NEVER_RUN = ("httpx._main", "trio")


def import_httpx() -> Any:
    """httpx with its transport (httpcore) imported, without the NEVER_RUN modules: each is
    marked missing (None in sys.modules) for the import only, which both libraries allow for
    (an ImportError they catch), then unmarked, so a later `import trio` works. Nothing happens
    where httpx is imported already (the tests)."""
    if "httpx" in sys.modules:
        return sys.modules["httpx"]
    marked = [name for name in NEVER_RUN if name not in sys.modules]
    for name in marked:
        sys.modules[name] = None  # type: ignore[assignment]  # "not installed", to an import
    try:
        import httpcore  # noqa: F401  (what httpx.Client imports when it is made)
        import httpx
    finally:
        for name in marked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    return httpx


def _verify_for(url: str) -> ssl.SSLContext | bool:
    """httpx's `verify` for this URL. Left to httpx (True), it loads the whole CA bundle into a
    new SSL context whenever a client is made (40 ms here), even for http://. A plain-http URL
    gets instead a context that loads no certificate and so trusts none: TLS never happens
    (httpx follows no redirect unless asked). Through a proxy from the environment, which may
    be reached over TLS, the usual context."""
    proxied = any(
        os.environ.get(name) for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    )
    if proxied or not url.lower().startswith("http://"):
        return True
    import ssl

    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)

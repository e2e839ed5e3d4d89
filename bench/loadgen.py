"""A small closed-loop HTTP/1.1 load generator on raw asyncio streams (keep-alive, one request
in flight per connection). Far lighter than an HTTP client library, so that on a 2-core machine
the generator takes as little CPU from the server under test as possible.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: (method, path, headers, body) of one request.
Request = tuple[str, str, dict[str, str], bytes]


@dataclass
class LoadResult:
    duration_s: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.duration_s if self.duration_s else 0.0


def _encode(host: str, request: Request) -> bytes:
    method, path, headers, body = request
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    length = 0
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
            raise RuntimeError("chunked responses are not supported by the load generator")
    if length:
        await reader.readexactly(length)
    return status


async def _run(
    host: str,
    port: int,
    make: Callable[[], Request],
    connections: int,
    duration_s: float,
    ok: set[int],
) -> LoadResult:
    result = LoadResult(duration_s=duration_s)
    stop_at = time.perf_counter() + duration_s
    hostport = f"{host}:{port}"

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < stop_at:
                data = _encode(hostport, make())
                began = time.perf_counter()
                try:
                    writer.write(data)
                    status = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    result.errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status in ok:
                    result.latencies.append(time.perf_counter() - began)
                else:
                    result.errors += 1
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    result.duration_s = time.perf_counter() - began
    return result


def run_load(
    url: str,
    make: Callable[[], Request],
    *,
    connections: int = 32,
    duration_s: float = 10.0,
    ok: set[int] | None = None,
) -> LoadResult:
    """Hammer `url` (http://host:port) with requests from `make` for `duration_s` seconds."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    return asyncio.run(_run(host, int(port), make, connections, duration_s, ok or {200}))


def picker(items: list[str]) -> Callable[[], str]:
    """A fast random choice among `items` (seeded, so runs are comparable)."""
    rng = random.Random(8)
    return lambda: items[rng.randrange(len(items))]

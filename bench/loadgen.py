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


STALE_AFTER_S = 4.0  # below the server's keep-alive timeout


@dataclass
class Stream:
    """One kind of request in a run: closed loop over `connections` connections (each sends
    its next request when the previous answer came), or paced at `rate_per_s` (open loop, one
    connection per request in flight, so a slow answer does not delay the next request)."""

    make: Callable[[], Request]
    connections: int = 32
    rate_per_s: float | None = None
    ok: set[int] = field(default_factory=lambda: {200})
    url: str | None = None  # http://host:port when not the run's (bots' callbacks: their port)


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> tuple[int, float]:
    began = time.perf_counter()
    writer.write(data)
    status = await _read_response(reader)
    return status, time.perf_counter() - began


async def _closed_worker(
    host: str, port: int, stream: Stream, result: LoadResult, stop_at: float
) -> None:
    hostport = f"{host}:{port}"
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            try:
                status, took = await _exchange(reader, writer, _encode(hostport, stream.make()))
            except (OSError, asyncio.IncompleteReadError, ValueError):
                result.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            _count(result, stream, status, took)
    finally:
        writer.close()


async def _paced_worker(
    host: str, port: int, stream: Stream, result: LoadResult, stop_at: float
) -> None:
    """Requests at fixed times; idle connections are kept for the next ones."""
    assert stream.rate_per_s
    hostport = f"{host}:{port}"
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
    pending: set[asyncio.Task[None]] = set()

    async def one() -> None:
        # An HTTP client's pool: the most recently used idle connection, unless the server may
        # have closed it meanwhile (uvicorn closes keep-alive connections idle for 5 s).
        while idle and time.perf_counter() - idle[-1][2] > STALE_AFTER_S:
            idle.pop()[1].close()
        if idle:
            reader, writer, _ = idle.pop()
        else:
            reader, writer = await asyncio.open_connection(host, port)
        try:
            status, took = await _exchange(reader, writer, _encode(hostport, stream.make()))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            result.errors += 1
            writer.close()
            return
        _count(result, stream, status, took)
        idle.append((reader, writer, time.perf_counter()))

    interval = 1 / stream.rate_per_s
    next_at = time.perf_counter()
    while next_at < stop_at:
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        task = asyncio.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
        next_at += interval
    if pending:
        await asyncio.wait(pending)
    for _, writer, _ in idle:
        writer.close()


def _count(result: LoadResult, stream: Stream, status: int, took: float) -> None:
    result.statuses[status] = result.statuses.get(status, 0) + 1
    if status in stream.ok:
        result.latencies.append(took)
    else:
        result.errors += 1


async def _run(host: str, port: int, streams: list[Stream], duration_s: float) -> list[LoadResult]:
    results = [LoadResult(duration_s=duration_s) for _ in streams]
    stop_at = time.perf_counter() + duration_s
    workers = []
    for stream, result in zip(streams, results, strict=True):
        where = _host_port(stream.url) if stream.url else (host, port)
        if stream.rate_per_s:
            workers.append(_paced_worker(*where, stream, result, stop_at))
        else:
            workers += [
                _closed_worker(*where, stream, result, stop_at) for _ in range(stream.connections)
            ]
    began = time.perf_counter()
    await asyncio.gather(*workers)
    for result in results:
        result.duration_s = time.perf_counter() - began
    return results


def run_streams(url: str, streams: list[Stream], *, duration_s: float = 10.0) -> list[LoadResult]:
    """Run every stream against `url` (http://host:port) at once for `duration_s` seconds;
    one result per stream."""
    return asyncio.run(_run(*_host_port(url), streams, duration_s))


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    return host, int(port)


def run_load(
    url: str,
    make: Callable[[], Request],
    *,
    connections: int = 32,
    duration_s: float = 10.0,
    ok: set[int] | None = None,
) -> LoadResult:
    """Hammer `url` (http://host:port) with requests from `make` for `duration_s` seconds."""
    stream = Stream(make, connections=connections, ok=ok or {200})
    return run_streams(url, [stream], duration_s=duration_s)[0]


def each_once(items: list[str]) -> Callable[[], str]:
    """Every item in order, then again from the start (a warm-up touches each once)."""
    position = iter(range(1 << 62))
    return lambda: items[next(position) % len(items)]


def picker(items: list[str]) -> Callable[[], str]:
    """A fast random choice among `items` (seeded, so runs are comparable)."""
    rng = random.Random(8)
    return lambda: items[rng.randrange(len(items))]

"""A container's output: its last lines, and a follower that polls for what it writes next.

Polling `logs(since=…, timestamps=True)`: a blocking `follow=True` stream would hold a thread
for the stream's whole life. The engine rotates the files itself (containers.py's log_config).
"""

from __future__ import annotations

import time

from docker.models.containers import Container

from botfleet.orchestrators.base import TailFirstFollower
from botfleet.orchestrators.docker.engine import engine_errors
from botfleet.orchestrators.log_tail import LogLimits, tail_text


def last_lines(container: Container, ref: str, *, tail: int, limits: LogLimits) -> str:
    """The last `tail` lines of `container` (runtime_ref `ref`), capped. The engine reads
    `tail` lines, which may be long: the caps bound what we answer."""
    with engine_errors(f"reading logs of {ref[:12]}"):
        raw: bytes = container.logs(stdout=True, stderr=True, tail=tail)
    return tail_text(raw, tail=tail, limits=limits)


class ContainerFollower(TailFirstFollower):
    """New output of a container since the last read, by timestamp (the engine's `since` has
    a precision of its own, so lines at or before the last one seen are skipped)."""

    def __init__(self, container: Container, first: str, limits: LogLimits) -> None:
        super().__init__(first)
        self._container = container
        self._last = time.time()
        self._last_stamp = ""
        self._limits = limits

    def read_new(self) -> bytes:
        with engine_errors(f"following logs of {self._container.id[:12]}"):
            raw: bytes = self._container.logs(
                stdout=True, stderr=True, timestamps=True, since=max(0.0, self._last - 1.0)
            )
        out = bytearray()
        for line in raw.splitlines(keepends=True)[-10_000:]:
            stamp, _, text = line.partition(b" ")
            key = stamp.decode(errors="replace").rstrip("Z").ljust(30, "0")
            if key <= self._last_stamp:
                continue
            self._last_stamp = key
            out += text
            if len(out) > self._limits.max_bytes:
                break
        if out:
            self._last = time.time()
        return bytes(out)

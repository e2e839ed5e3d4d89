"""A small incremental Server-Sent Events parser (the subset `GET /events` uses)."""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    id: str | None
    event: str
    data: str


class SSEParser:
    """Feed it raw bytes in any chunking; it yields each complete event once.

    Written here rather than depending on httpx-sse: the format is a dozen lines, and chunks
    may split a line (or a UTF-8 character) anywhere.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._reset()
        self.last_id: str | None = None
        self.retry_ms: int | None = None

    def _reset(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, chunk: bytes) -> Iterator[Event]:
        self._buffer += self._decoder.decode(chunk)
        # A trailing lone \r may still be the first half of \r\n: keep it for the next chunk.
        while True:
            cut = min(
                (i for i in (self._buffer.find("\n"), self._buffer.find("\r")) if i >= 0),
                default=-1,
            )
            if cut < 0 or (self._buffer[cut] == "\r" and cut == len(self._buffer) - 1):
                return
            line = self._buffer[:cut]
            step = 2 if self._buffer.startswith("\r\n", cut) else 1
            self._buffer = self._buffer[cut + step :]
            if event := self._line(line):
                yield event

    def _line(self, line: str) -> Event | None:
        if not line:  # a blank line dispatches the event gathered so far
            event = None
            if self._data:
                event = Event(
                    id=self._id or self.last_id,
                    event=self._event or "message",
                    data="\n".join(self._data),
                )
            self._reset()
            return event
        if line.startswith(":"):  # a comment: keep-alive
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self._id = self.last_id = value
        elif field == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

"""Bounded log reading shared by every backend and by the lines kept on a bot's record.

A bot controls its own output, so nothing here is ever proportional to what it wrote: a tail
reads at most `max_bytes` plus one block from the end, whatever the file's size or its lines'
lengths, and answers at most `max_bytes`; a line longer than `line_max_bytes` is cut and ends
with `… [truncated N bytes]`. A line whose start lies before the bytes read (one huge line)
shows its end after `[truncated] …`. `LineCapper` does the same to a followed stream.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

BLOCK = 65_536
#: Shown where a line was cut; N is the number of bytes left out.
MARKER = "… [truncated {n} bytes]"
#: Starts a line whose beginning was not read (it began more than `max_bytes` before the end).
HEAD_MARKER = b"[truncated] \xe2\x80\xa6"


@dataclass(frozen=True)
class LogLimits:
    """The caps of one answer: total bytes and bytes per line (BOTFLEET_LOG_*_MAX_BYTES)."""

    max_bytes: int = 1_048_576
    line_max_bytes: int = 16_384


def _utf8_start(data: bytes, cut: int) -> int:
    """Move `cut` back so it does not split a UTF-8 sequence."""
    while 0 < cut < len(data) and data[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut


def cap_line(line: bytes, line_max: int) -> bytes:
    """`line` if it fits, else its start and the marker, `line_max` bytes at most."""
    return _cut(line[:line_max], len(line), line_max)


def _cut(head: bytes, length: int, line_max: int) -> bytes:
    """A line of `length` bytes that starts with `head`, capped to `line_max` with the marker."""
    if length <= line_max:
        return head
    widest = len(MARKER.format(n=length).encode())
    keep = _utf8_start(head, max(0, line_max - widest))
    return head[:keep] + MARKER.format(n=length - keep).encode()


def _cap_headless(line: bytes, line_max: int) -> bytes:
    """A line whose start was not read: the marker, then as much of its end as fits."""
    room = max(0, line_max - len(HEAD_MARKER))
    if len(line) <= room:
        return HEAD_MARKER + line
    start = len(line) - room
    while start < len(line) and line[start] & 0xC0 == 0x80:
        start += 1
    return HEAD_MARKER + line[start:]


def _normalise(line: bytes) -> bytes:
    """Invalid UTF-8 replaced now, so the caps count the bytes actually sent."""
    return line.decode("utf-8", errors="replace").encode()


def cap_lines(
    lines: Sequence[bytes], *, tail: int, limits: LogLimits, headless_first: bool = False
) -> str:
    """The last `tail` of `lines` (oldest first), each capped, `limits.max_bytes` in all.

    `headless_first`: the first line's beginning was not read.
    """
    kept: list[bytes] = []
    total = 0
    for index in range(len(lines) - 1, -1, -1):
        if len(kept) >= tail:
            break
        raw = _normalise(lines[index])
        if index == 0 and headless_first:
            line = _cap_headless(raw, limits.line_max_bytes)
        else:
            line = cap_line(raw, limits.line_max_bytes)
        total += len(line) + (1 if kept else 0)
        if total > limits.max_bytes:
            break
        kept.append(line)
    kept.reverse()
    return b"\n".join(kept).decode("utf-8", errors="replace")


def tail_text(data: bytes | str, *, tail: int, limits: LogLimits, complete: bool = True) -> str:
    """The capped last lines of `data`; `complete=False`: `data` may start mid-line (a window
    read from the end), so a first line is shown headless only when it is all there is."""
    if tail <= 0:
        return ""
    raw = data.encode() if isinstance(data, str) else data
    window = max(limits.max_bytes + BLOCK, 0)
    if len(raw) > window:  # never split more than can be answered
        raw, complete = raw[-window:], False
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    headless = not complete
    if headless and len(lines) > tail:
        lines, headless = lines[-tail:], False
    return cap_lines(lines, tail=tail, limits=limits, headless_first=headless)


def read_tail(paths: Iterable[Path], *, tail: int, limits: LogLimits) -> str:
    """The last lines of the files `paths` (newest first, e.g. `x.log`, `x.log.1`) read as one
    stream from its end, in blocks collected in a list: at most `max_bytes` + one block."""
    if tail <= 0:
        return ""
    budget = limits.max_bytes + BLOCK
    blocks: list[bytes] = []  # newest first
    newlines = 0
    reached_start = True
    for path in paths:
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            continue
        with handle:
            pos = handle.seek(0, os.SEEK_END)
            while pos > 0 and budget > 0 and newlines <= tail:
                step = min(BLOCK, pos, budget)
                pos -= step
                handle.seek(pos)
                block = handle.read(step)
                blocks.append(block)
                newlines += block.count(b"\n")
                budget -= len(block)
            if pos > 0:
                reached_start = False
        if budget <= 0 or newlines > tail:
            reached_start = False
            break
    blocks.reverse()
    return tail_text(b"".join(blocks), tail=tail, limits=limits, complete=reached_start)


class LineCapper:
    """Caps the lines of a followed stream as they arrive; holds at most one line's cap."""

    def __init__(self, line_max: int) -> None:
        self.line_max = line_max
        self._pending = bytearray()
        self._dropped = 0

    def feed(self, data: bytes) -> bytes:
        """The complete lines in `data` (after what came before), capped."""
        out = bytearray()
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            piece = data[start:] if end < 0 else data[start:end]
            room = self.line_max - len(self._pending)
            if len(piece) <= room and not self._dropped:
                self._pending += piece
            else:
                self._pending += piece[: max(0, room)]
                self._dropped += max(0, len(piece) - max(0, room))
            if end < 0:
                break
            out += self._line() + b"\n"
            start = end + 1
        return bytes(out)

    def flush(self) -> bytes:
        """What is left of an unfinished line, at the stream's end."""
        return self._line() if self._pending or self._dropped else b""

    def _line(self) -> bytes:
        line = _cut(bytes(self._pending), len(self._pending) + self._dropped, self.line_max)
        self._pending.clear()
        self._dropped = 0
        line = _normalise(line)  # a replaced invalid byte grows, so cap once more
        return cap_line(line, self.line_max)

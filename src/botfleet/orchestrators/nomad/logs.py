"""A Nomad task's output: its last lines, and a follower that polls for what it writes next.

Only Stream Logs (`GET /v1/client/fs/logs/:alloc_id`, no `follow`) is used, so the ACL token
needs `read-logs` alone (`/fs/ls` and `/fs/stat` would need `read-fs`, which also reads the
rendered secrets). Its `offset` counts bytes across the task's log files from the oldest one kept
(`origin=start`), or back from the newest one's end (`origin=end`); an offset past the end
answers nothing. Answers say neither a log's size nor its files, so the follower finds where the
output ends by reading (`find_end`), then asks from that offset on.

Framed, never `plain=true`: Nomad's HTTP layer writes an error that happens after the first
byte of a stream into the 200 body it already started (command/agent/fs_endpoint.go
`fsStreamImpl` returns it, command/agent/http.go `wrap` writes it after the data), so a plain
answer would show the error as the bot's output. Framed, the answer is a run of JSON frames
(client/lib/streamframer/framer.go `StreamFrame`: `Offset`, `Data` in base64, `File`,
`FileEvent`); anything after the last whole frame is that error, and the read fails with it
(`LogStreamBroken`), as Nomad's own client does (api/fs.go `AllocFS.Logs`: "failed to decode
log endpoint response as JSON").

Polling, as the docker backend does: a `follow=true` stream would hold a thread for the
stream's whole life. Every read is streamed and cut at its byte budget, so no answer costs more
than the caps (`orchestrators/log_tail.py`) whatever the log's size; bytes stay bytes here (the
caps decode them as UTF-8).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

from botfleet.orchestrators.base import (
    BackendUnavailable,
    OrchestratorError,
    TailFirstFollower,
    WorkloadNotFound,
)
from botfleet.orchestrators.log_tail import BLOCK, LogLimits

log = logging.getLogger(__name__)

#: Nomad keeps a task's two streams apart; a tail shows stdout's lines, then stderr's.
STREAMS = ("stdout", "stderr")
#: The most a read that looks for the end of a log takes.
PROBE_BYTES = 4096
#: Reads `find_end` makes at most (the gap halves with each; 64 cover any size).
MAX_PROBES = 64
#: Sent in the stream when Nomad rotated a log file away under the follower.
SKIPPED = "[… output skipped: Nomad rotated the log away]\n".encode()


class ReadLog(Protocol):
    """At most `limit` bytes of the allocation's `stream`, from `offset` counted from `origin`."""

    def __call__(
        self, alloc_id: str, stream: str, origin: str, offset: int, limit: int
    ) -> bytes: ...


#: One JSON frame: an object whose strings may hold braces (no frame nests an object);
#: possessive, so text that is no frame fails at once instead of backtracking.
_FRAME = re.compile(rb'\{(?:[^"{}]++|"[^"\\]*+(?:\\.[^"\\]*+)*+")*+\}')
_SPACE = re.compile(rb"\s*+")
#: Bytes a frame may take at most: 64 KiB of data (client/fs_endpoint.go `streamFrameSize`) in
#: base64, its file name and offset. A longer unfinished one is no frame.
MAX_FRAME_BYTES = 4 * (64 * 1024) // 3 + 8192
#: The most of Nomad's error text kept for the message.
_ERROR_CHARS = 500


class LogStreamBroken(BackendUnavailable):
    """Nomad's log stream failed after it began: its error came after the frames, in the 200
    answer. `data` holds the output the frames before it carried."""

    def __init__(self, message: str, data: bytes = b"") -> None:
        super().__init__(message)
        self.data = data


class NodeUnreachable(OrchestratorError):
    """The logs live on a Nomad client the servers have no connection to (Nomad: 404 "No path
    to node"): they cannot be read until it reconnects."""

    code = "node_unreachable"


class LogsGone(OrchestratorError):
    """Nomad no longer keeps the allocation's logs (it collected the allocation, or its node)."""

    code = "logs_gone"


class FrameReader:
    """Nomad's framed log answer, fed as it arrives: the output of each whole frame."""

    def __init__(self) -> None:
        self._pending = b""
        #: Bytes of output the frames carried so far.
        self.total = 0

    def feed(self, chunk: bytes) -> bytes:
        """The output of the frames `chunk` completes; LogStreamBroken once what follows the
        last whole frame cannot be one (Nomad's error text), its `data` what came before."""
        buffer, at = self._pending + chunk, 0
        out = bytearray()
        while True:
            at = _SPACE.match(buffer, at).end()  # type: ignore[union-attr]  # always matches
            match = _FRAME.match(buffer, at)
            if match is None:
                rest = buffer[at:]
                if rest and (rest[:1] != b"{" or len(rest) > MAX_FRAME_BYTES):
                    raise self._broken(rest, bytes(out))
                self._pending = rest  # empty, or a frame still arriving
                self.total += len(out)
                return bytes(out)
            out += self._payload(match.group(), bytes(out))
            at = match.end()

    def finish(self) -> None:
        """The answer ended: LogStreamBroken when it left anything but whole frames."""
        if self._pending.strip():
            raise self._broken(self._pending.strip(), b"")

    def _payload(self, frame: bytes, out: bytes) -> bytes:
        try:
            decoded = json.loads(frame)
            return base64.b64decode(decoded.get("Data") or "", validate=True)
        except (ValueError, AttributeError, binascii.Error):
            raise self._broken(frame, out) from None

    def _broken(self, text: bytes, out: bytes) -> LogStreamBroken:
        said = text.decode(errors="replace")[:_ERROR_CHARS].strip()
        return LogStreamBroken(
            f"Nomad's log stream failed after {self.total + len(out)} bytes of output: {said}",
            out,
        )


def read_capped(
    requester: Any, alloc_id: str, task: str, stream: str, *, origin: str, offset: int, limit: int
) -> bytes:
    """One framed Stream Logs answer, streamed and cut at `limit` bytes of output; an error
    Nomad wrote after the frames raises LogStreamBroken (never passes as output)."""
    if limit <= 0:
        return b""
    params = {
        "task": task,
        "type": stream,
        "follow": False,
        "offset": offset,
        "origin": origin,
        "plain": False,
    }
    response = requester.request(alloc_id, params=params, method="get", stream=True)
    try:
        frames = FrameReader()
        data = bytearray()
        for chunk in response.iter_content(chunk_size=BLOCK):
            try:
                data += frames.feed(chunk)
            except LogStreamBroken as exc:
                exc.data = (bytes(data) + exc.data)[:limit]
                raise
            if len(data) >= limit:
                return bytes(data[:limit])
        try:
            frames.finish()
        except LogStreamBroken as exc:
            exc.data = bytes(data)
            raise
        return bytes(data)
    finally:
        response.close()


def find_end(read_from: Callable[[int, int], bytes], *, at_least: int = 0) -> int:
    """The log's length in bytes, learnt by reading (`read_from(offset, limit)`, origin start):
    a read from `p` answers `length - p` bytes, so one that answers fewer than it may take
    tells the length. Gallops up from `at_least`, then halves the gap: a few small reads."""
    low, high, probe_at = at_least, None, at_least
    for _ in range(MAX_PROBES):
        got = len(read_from(probe_at, PROBE_BYTES))
        if 0 < got < PROBE_BYTES:
            return probe_at + got
        if got == 0:
            high = probe_at  # the end is at or before it
        else:
            low = probe_at + PROBE_BYTES
        if high is not None and low >= high:
            return min(low, high)  # a log that moved meanwhile: rather repeat than skip
        probe_at = 2 * low if high is None else (low + high) // 2
    return low


def last_lines(windows: Sequence[tuple[bytes, bool]], tail: int) -> bytes:
    """The last `tail` lines of each stream's window, stdout's then stderr's, `tail` in all.
    `(data, whole)`: `whole` is False when `data` does not start where its stream starts,
    so its first line may be cut and is left out."""
    lines: list[bytes] = []
    for data, whole in windows:
        chunk = data.split(b"\n")
        if chunk[-1] == b"":
            chunk.pop()
        if not whole and chunk:
            chunk = chunk[1:]
        lines += chunk[-tail:] if tail > 0 else []
    return b"\n".join(lines[-tail:]) if tail > 0 else b""


class TaskLogFollower(TailFirstFollower):
    """Reads each stream from the offset where the last read ended.

    A stream's unfinished last line is held back until it ends (so stdout and stderr never
    mix within a line), or until it is as long as a line may be, or unchanged over two reads
    (the bot paused, or exited: its last words are not lost).
    """

    def __init__(
        self,
        read: ReadLog,
        *,
        find_alloc: Callable[[], str | None],
        limits: LogLimits,
        alloc_id: str | None = None,
        positions: dict[str, int] | None = None,
        first: bytes = b"",
    ) -> None:
        super().__init__(first)
        self._read = read
        self._find_alloc = find_alloc
        self._limits = limits
        self._alloc_id = alloc_id
        # An allocation not started when the follow began: all it writes is new.
        self._pos = positions or dict.fromkeys(STREAMS, 0)
        self._held = dict.fromkeys(STREAMS, 0)

    @classmethod
    def open(
        cls,
        read: ReadLog,
        *,
        find_alloc: Callable[[], str | None],
        limits: LogLimits,
        tail: int,
        window: int,
    ) -> TaskLogFollower:
        """A follower placed at the current end of each stream, whose first read answers the
        last `tail` lines before it (at most `window` bytes of each stream)."""
        alloc_id = find_alloc()  # WorkloadNotFound: the job is gone
        if alloc_id is None:
            return cls(read, find_alloc=find_alloc, limits=limits)
        windows: list[tuple[bytes, bool]] = []
        positions: dict[str, int] = {}
        for stream in STREAMS:
            try:
                data = read(alloc_id, stream, "end", window, window)
            except WorkloadNotFound:  # the task has not started: no logs yet
                data = b""
            if len(data) < window:  # the whole log
                windows.append((data, True))
                positions[stream] = len(data)
                continue
            end = find_end(partial(read, alloc_id, stream, "start"), at_least=window)
            data = read(alloc_id, stream, "start", max(0, end - window), window)
            windows.append((data, end <= window))
            positions[stream] = end
        first = last_lines(windows, tail)
        return cls(
            read,
            find_alloc=find_alloc,
            limits=limits,
            alloc_id=alloc_id,
            positions=positions,
            first=first,
        )

    def read_new(self) -> bytes:
        if self._alloc_id is None:
            try:
                self._alloc_id = self._find_alloc()
            except OrchestratorError as exc:
                log.info("following logs: %s", exc)
            if self._alloc_id is None:
                return b""
        out = bytearray()
        for stream in STREAMS:
            try:
                out += self._next(self._alloc_id, stream)
            except WorkloadNotFound:
                pass  # not started yet, or collected: the workload check ends the stream
            except OrchestratorError as exc:  # an outage holds the stream open, quietly
                log.info("following logs of allocation %s: %s", self._alloc_id[:8], exc)
        return bytes(out)

    def _next(self, alloc_id: str, stream: str) -> bytes:
        """What `stream` wrote since the last read, in whole lines where it can."""
        pos = self._pos[stream]
        limit = max(self._limits.line_max_bytes, self._limits.max_bytes // len(STREAMS))
        # One byte before the offset: a log shorter than what was read was rotated away.
        back = 1 if pos > 0 else 0
        try:
            data = self._read(alloc_id, stream, "start", pos - back, limit + back)
        except LogStreamBroken as exc:
            # The output before Nomad's error is real: its whole lines go on, the rest is read
            # again next time; the error itself is never output.
            log.warning("following logs of allocation %s: %s", alloc_id[:8], exc)
            whole = exc.data[back:]
            cut = whole.rfind(b"\n") + 1
            self._pos[stream] = pos + cut
            return whole[:cut]
        if back and not data:
            self._pos[stream] = find_end(partial(self._read, alloc_id, stream, "start"))
            self._held[stream] = 0
            return SKIPPED
        data = data[back:]
        cut = data.rfind(b"\n") + 1
        if (
            cut == 0
            and data
            and (
                len(data) == self._held[stream]
                or len(data) >= min(limit, self._limits.line_max_bytes)
            )
        ):
            cut = len(data)  # a line paused, or too long to wait for: send it as it is
        self._held[stream] = len(data) - cut
        self._pos[stream] = pos + cut
        return data[:cut]

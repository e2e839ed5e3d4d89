"""Bots' output streams: the manager reads each bot's stdout and stderr from a pipe and writes
its log files itself, so the size cap holds while the bot writes, not at the next rotation.

Each attempt writes into a named pipe, `<data_dir>/log-pipes/<bot>~<token>.fifo` (0600 in a
0700 folder: the bot only has the descriptor it inherits). The bot gets it opened read-write,
so a reader always remains: while no manager reads (a restart), its writes block once the
pipe's buffer (`PIPE_BYTES`) is full, instead of failing with EPIPE. The manager reads it and
holds an flock on its read end, so after a restart it, or another replica sharing the data
folder, takes the pipe over (`adopt`), and never two at once.

One thread (`LogPump`) waits on every pipe with epoll: idle, it costs nothing. Each round a
ready pipe gives one read of at most `CHUNK` bytes, so a bot that floods gets its turn like the
others and is slowed by its own full pipe (its writes block), never another bot nor the
manager. `LogFile` rotates by rename before a write would take `<bot>.log` over the cap, so no
file ever exceeds it. When a bot exits, what it wrote last is read before its exit is reported
(`BotStreams.drain`, from the backend's inspect).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import selectors
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

from botfleet.orchestrators import process_isolation as isolation

log = logging.getLogger(__name__)

#: The most one read takes from one pipe per round (and one drain step).
CHUNK = 65_536
#: A drain reads at most this many chunks: a bot's children may still be writing.
_DRAIN_CHUNKS = 64
_SUFFIX = ".fifo"
#: Each pipe's buffer, asked of the kernel (its pages are only used as they fill): what a bot
#: may write while no manager reads before its writes block.
PIPE_BYTES = 1 << 20


class LogFile:
    """`<bot>.log`, appended to by the manager alone; rotated before it would exceed the cap:
    `.log` becomes `.log.1` (older ones shift, the oldest falls off), lines kept whole where a
    line is shorter than a file."""

    def __init__(self, path: Path, *, max_bytes: int, files: int) -> None:
        self.path, self.max_bytes, self.files = path, max_bytes, files
        self.lock = threading.Lock()
        self.users = 0  # streams writing here; closed at 0 (BotStreams)
        self._fd = -1
        self._size = 0
        self._failed = False

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size

    def close(self) -> None:
        with self.lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def enforce_cap(self, shrink: Callable[[Path], None]) -> None:
        """A file over the cap was written by someone else too (a bot of an older version
        appending itself): `shrink` it (copytruncate) while the pipe waits, then reopen."""
        with self.lock:
            try:
                if self.path.stat().st_size <= self.max_bytes:
                    return
            except FileNotFoundError:
                return
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            shrink(self.path)

    def write(self, data: bytes) -> None:
        """Append `data`, rotating first whenever it would not fit; a disk error drops the chunk
        (logged once until a write succeeds again) rather than stop reading the bot."""
        with self.lock:
            try:
                self._append(data)
                self._failed = False
            except OSError as exc:
                if not self._failed:
                    log.warning("cannot write %s (output dropped): %s", self.path.name, exc)
                self._failed = True

    def _append(self, data: bytes) -> None:
        if self._fd < 0:
            self._open()
        while data:
            room = self.max_bytes - self._size
            if len(data) <= room:
                self._write_all(data)
                return
            cut = data.rfind(b"\n", 0, room) + 1 if room > 0 else 0
            if cut == 0 and self._size == 0:
                cut = room  # a line longer than a whole file: split it
            if cut:
                self._write_all(data[:cut])
                data = data[cut:]
            self._rotate()

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            self._size += written
            view = view[written:]

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        if self.files > 1:
            name = self.path.name
            self.path.with_name(f"{name}.{self.files - 1}").unlink(missing_ok=True)
            for n in range(self.files - 2, 0, -1):
                with suppress(FileNotFoundError):
                    os.replace(
                        self.path.with_name(f"{name}.{n}"), self.path.with_name(f"{name}.{n + 1}")
                    )
            os.replace(self.path, self.path.with_name(f"{name}.1"))
        else:
            os.truncate(self.path, 0)
        self._open()


class PipeStream:
    """One attempt's pipe: its read end (non-blocking, flocked) and the bot's LogFile."""

    def __init__(self, name: str, bot_id: str, fd: int, log_file: LogFile) -> None:
        self.name, self.bot_id, self.fd, self.log_file = name, bot_id, fd, log_file
        self.lock = threading.Lock()  # one reader at a time: the pump or a drain
        self.closed = False

    def pump(self) -> bool | None:
        """Move one read into the log: True when something was read, False when the pipe is
        empty, None at its end (no writer remains)."""
        with self.lock:
            if self.closed:
                return None
            try:
                data = os.read(self.fd, CHUNK)
            except BlockingIOError:
                return False
            except OSError as exc:
                log.warning("cannot read the output pipe %s: %s", self.name, exc)
                return None
            if not data:
                return None
            self.log_file.write(data)
            return True


class LogPump:
    """The thread that waits on every pipe (epoll) and moves their output into the logs;
    started with the first pipe. Pipes are added through a queue (the selector is the
    thread's alone); `on_end` runs on the thread when a pipe has no writer left."""

    def __init__(self, on_end: Callable[[PipeStream], None]) -> None:
        self._on_end = on_end
        self._guard = threading.Lock()
        self._pending: list[PipeStream] = []
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1
        self._stopping = False

    def add(self, stream: PipeStream) -> None:
        with self._guard:
            self._pending.append(stream)
            if self._thread is None:
                self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                self._thread = threading.Thread(target=self._run, name="bot-log-pump", daemon=True)
                self._thread.start()
            wake = self._wake_w
        with suppress(BlockingIOError):  # full: a wake-up is pending already
            os.write(wake, b"x")

    def stop(self, timeout: float) -> None:
        """End the thread after the chunk it is moving (none is lost between a read and its
        write); the pipes stay, for the next manager to take over."""
        with self._guard:
            thread, self._stopping = self._thread, True
            wake = self._wake_w
        if thread is None:
            return
        with suppress(BlockingIOError):
            os.write(wake, b"x")
        thread.join(timeout)

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake_r, selectors.EVENT_READ, None)
            while not self._stopping:
                for key, _ in selector.select():
                    stream: PipeStream | None = key.data
                    if stream is None:
                        self._take_pending(selector)
                        continue
                    if self._stopping:
                        break
                    try:
                        ended = stream.pump() is None  # one read per ready pipe per round
                    except Exception:  # never let one pipe stop every bot's log
                        log.exception("output pipe %s failed; it is closed", stream.name)
                        ended = True
                    if ended:
                        selector.unregister(stream.fd)
                        self._on_end(stream)

    def _take_pending(self, selector: selectors.BaseSelector) -> None:
        with suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        with self._guard:
            pending, self._pending = self._pending, []
        for stream in pending:
            selector.register(stream.fd, selectors.EVENT_READ, stream)


class BotStreams:
    """Every pipe this manager reads, their bots' log files and the pump; see the module."""

    def __init__(self, directory: Path, open_log: Callable[[str], LogFile]) -> None:
        self.directory = directory
        self._open_log = open_log
        self._guard = threading.Lock()
        self._streams: dict[str, PipeStream] = {}
        self._files: dict[str, LogFile] = {}
        self._pump = LogPump(self._end)

    def close(self) -> None:
        """Stop reading (manager shutdown): the bots keep their pipes, and block once one is
        full, until a manager takes it over."""
        self._pump.stop(timeout=5.0)
        with self._guard:
            streams, self._streams = list(self._streams.values()), {}
            files, self._files = list(self._files.values()), {}
        for stream in streams:  # their flocks go with them: the next manager may adopt
            with stream.lock:
                if not stream.closed:
                    stream.closed = True
                    os.close(stream.fd)
        for log_file in files:
            log_file.close()

    def log_file(self, bot_id: str) -> LogFile | None:
        """The bot's log file when this manager writes it."""
        with self._guard:
            return self._files.get(bot_id)

    def open(self, bot_id: str) -> BinaryIO:
        """A new pipe for one attempt of `bot_id`, already read by the pump; returns its
        read-write end for the bot's stdout and stderr (the caller closes its copy after the
        spawn: the pipe ends once the bot and its children closed theirs)."""
        isolation.private_dir(self.directory)
        name = f"{bot_id}~{secrets.token_hex(8)}{_SUFFIX}"
        hidden = self.directory / f".{name}"  # adopt() skips it until it is ours
        os.mkfifo(hidden, 0o600)
        try:
            read_fd = os.open(hidden, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            fcntl.flock(read_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            write_fd = os.open(hidden, os.O_RDWR | os.O_CLOEXEC)
            with suppress(OSError):  # room for a restart's worth of output; a hint only
                fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            os.rename(hidden, self.directory / name)
        except OSError:
            hidden.unlink(missing_ok=True)
            raise
        self._start(name, bot_id, read_fd)
        return os.fdopen(write_fd, "wb")

    def adopt(self) -> None:
        """Take over the pipes nobody reads: those of an earlier manager process (their bots
        block once the pipe is full until then), or of a replica that ended."""
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return
        for entry in entries:
            name = entry.name
            if name.startswith(".") or not name.endswith(_SUFFIX) or "~" not in name:
                continue
            with self._guard:
                if name in self._streams:
                    continue
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                continue  # another manager reads it
            self._start(name, name.rsplit("~", 1)[0], fd)

    def _start(self, name: str, bot_id: str, read_fd: int) -> None:
        with self._guard:
            log_file = self._files.get(bot_id)
            if log_file is None:
                log_file = self._files[bot_id] = self._open_log(bot_id)
            log_file.users += 1
            stream = self._streams[name] = PipeStream(name, bot_id, read_fd, log_file)
        self._pump.add(stream)

    def drain(self, bot_id: str) -> None:
        """Read what the bot's pipes hold now into its log (an exited bot's last words)."""
        with self._guard:
            streams = [s for s in self._streams.values() if s.bot_id == bot_id]
        for stream in streams:
            for _ in range(_DRAIN_CHUNKS):
                if not stream.pump():
                    break

    def _end(self, stream: PipeStream) -> None:
        """No writer remains: the pipe goes (its name first, so no one adopts it)."""
        with stream.lock:
            stream.closed = True
            with suppress(OSError):
                (self.directory / stream.name).unlink(missing_ok=True)
            os.close(stream.fd)
        with self._guard:
            self._streams.pop(stream.name, None)
            stream.log_file.users -= 1
            if stream.log_file.users == 0:
                self._files.pop(stream.bot_id, None)
                stream.log_file.close()

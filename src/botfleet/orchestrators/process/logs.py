"""Bots' log files: `<data_dir>/logs/<bot>.log`, one per bot across its attempts, and its
rotated copies `<bot>.log.1`, … (newest first).

The manager writes them itself from each bot's output pipe (`log_pipes.py`), rotating by rename
before a file would exceed `log_file_max_bytes`. Files of bots started before that (an older
version, whose bots append through an inherited descriptor) are still rotated by copytruncate,
as logrotate does. Tails read from the end in blocks (`orchestrators/log_tail.py`): their cost
is the answer's size, never the log's.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO

from botfleet.orchestrators import process_isolation as isolation
from botfleet.orchestrators.base import BackendUnavailable, TailFirstFollower
from botfleet.orchestrators.log_tail import LogLimits, read_tail
from botfleet.orchestrators.process.config import ProcessOrchestratorConfig
from botfleet.orchestrators.process.log_pipes import BotStreams, LogFile

log = logging.getLogger(__name__)

_BLOCK = 8192
_COPY_BLOCK = 1 << 20
_FOLLOW_CHUNK = 256 * 1024


def copytruncate(path: Path, keep_bytes: int, files: int) -> None:
    """Shift `path.1`… up by one (the oldest falls off), copy the last `keep_bytes` of `path`
    (from a line start when there is one) into `path.1` (0600), then truncate `path`."""
    if files > 1:
        oldest = path.with_name(f"{path.name}.{files - 1}")
        oldest.unlink(missing_ok=True)
        for n in range(files - 2, 0, -1):
            older = path.with_name(f"{path.name}.{n}")
            if older.exists():
                os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
        tmp = path.with_name(f"{path.name}.rotating")
        with path.open("rb") as src:
            size = src.seek(0, os.SEEK_END)
            start = max(0, size - keep_bytes)
            if start:
                src.seek(start)
                head = src.read(min(_BLOCK, size - start))
                newline = head.find(b"\n")
                start += newline + 1 if 0 <= newline < len(head) - 1 else 0
            src.seek(start)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as dst:
                remaining = size - start
                while remaining > 0 and (block := src.read(min(_COPY_BLOCK, remaining))):
                    dst.write(block)
                    remaining -= len(block)
        os.replace(tmp, path.with_name(f"{path.name}.1"))
    os.truncate(path, 0)


class FileFollower(TailFirstFollower):
    """Follows `<bot>.log`: the tail first, then what is appended. A new file under the name
    was rotated: the rest of the old one is read from `.1` first, then the new one from its
    start; a file shorter than what was read was truncated (copytruncate): read from 0."""

    def __init__(self, paths: list[Path], *, tail: int, limits: LogLimits) -> None:
        self._path = paths[0]
        self._inode: int | None
        try:
            stat = self._path.stat()
            self._offset, self._inode = stat.st_size, stat.st_ino
        except FileNotFoundError:
            self._offset, self._inode = 0, None
        super().__init__(read_tail(paths, tail=tail, limits=limits) if tail > 0 else "")

    def read_new(self) -> bytes:
        try:
            try:
                stat = self._path.stat()
            except FileNotFoundError:
                return b""
            if self._inode is not None and stat.st_ino != self._inode:
                rest = self._rest_of_rotated()
                if rest:
                    return rest
                self._offset, self._inode = 0, stat.st_ino
            self._inode = stat.st_ino
            return self._read_from(self._path)
        except OSError as exc:
            raise BackendUnavailable(f"cannot read {self._path.name}: {exc}") from exc

    def _rest_of_rotated(self) -> bytes:
        """What the rotated file (now `.1`) got after our last read, if it is still there."""
        rotated = self._path.with_name(f"{self._path.name}.1")
        try:
            if rotated.stat().st_ino != self._inode:
                return b""
            return self._read_from(rotated)
        except FileNotFoundError:
            return b""

    def _read_from(self, path: Path) -> bytes:
        try:
            with path.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size < self._offset:
                    self._offset = 0
                if size == self._offset:
                    return b""
                handle.seek(self._offset)
                data = handle.read(min(size - self._offset, _FOLLOW_CHUNK))
        except FileNotFoundError:
            return b""
        self._offset += len(data)
        return data


class BotLogs:
    """The logs folder of one process backend."""

    def __init__(self, config: ProcessOrchestratorConfig) -> None:
        self.config = config
        self.directory = config.data_dir / "logs"
        self._streams = BotStreams(config.data_dir / "log-pipes", self._log_file)
        try:  # bots of an earlier manager process block on a full pipe until then
            self._streams.adopt()
        except OSError as exc:
            log.warning("cannot take over the bots' output pipes: %s", exc)

    def ensure_dir(self) -> None:
        isolation.private_dir(self.directory)

    def _log_file(self, bot_id: str) -> LogFile:
        return LogFile(
            self.path(bot_id),
            max_bytes=self.config.log_file_max_bytes,
            files=self.config.log_files,
        )

    def open_stream(self, bot_id: str) -> BinaryIO:
        """The write end of a new output pipe for one attempt of the bot (its stdout and
        stderr); what goes through it lands in `<bot>.log`, within the cap (log_pipes.py)."""
        self.path(bot_id)  # a valid name first
        self.ensure_dir()
        return self._streams.open(bot_id)

    def close(self) -> None:
        self._streams.close()

    def drain(self, bot_id: str) -> None:
        """Move what the bot's pipes hold into its log: called once it exited, before its exit
        is reported, so its last lines are in the log."""
        self._streams.drain(bot_id)

    def path(self, bot_id: str) -> Path:
        """`<bot>.log`; ValueError for an id that cannot name a file in the folder."""
        if not bot_id or bot_id.startswith(".") or Path(bot_id).name != bot_id:
            raise ValueError(f"bot id {bot_id!r} cannot name a log file")
        return self.directory / f"{bot_id}.log"

    def paths(self, bot_id: str) -> list[Path]:
        """The bot's log files, newest first: `<bot>.log`, `<bot>.log.1`, …"""
        current = self.path(bot_id)
        rotated = [
            current.with_name(f"{current.name}.{n}") for n in range(1, self.config.log_files)
        ]
        return [current, *rotated]

    def tail(self, bot_id: str, tail: int) -> str:
        """The last `tail` lines of the bot's logs (all attempts, rotated files too), read from
        the end in blocks: at most the byte cap and one block, whatever the files hold."""
        try:
            return read_tail(self.paths(bot_id), tail=tail, limits=self.config.log_limits())
        except OSError as exc:
            raise BackendUnavailable(f"cannot read the log of bot {bot_id}: {exc}") from exc

    def follow(self, bot_id: str, tail: int) -> FileFollower:
        return FileFollower(self.paths(bot_id), tail=tail, limits=self.config.log_limits())

    def rotate(self) -> None:
        """Take over pipes nobody reads (a replica that ended); copytruncate every file over the
        size cap, which only a bot of an older version (appending itself) makes: its last
        `log_file_max_bytes` go to `.1` after the older ones shift, then it is truncated.
        Output written between the copy and the truncation (microseconds) is lost."""
        try:
            self._streams.adopt()
            paths = sorted(self.directory.glob("*.log"))
        except OSError as exc:
            raise BackendUnavailable(f"cannot list {self.directory}: {exc}") from exc
        keep, files = self.config.log_file_max_bytes, self.config.log_files
        for path in paths:
            owned = self._streams.log_file(path.name.removesuffix(".log"))
            if owned is not None:  # at the cap already, unless someone else appends too
                owned.enforce_cap(lambda over: copytruncate(over, keep, files))
                continue
            try:
                if path.stat().st_size > self.config.log_file_max_bytes:
                    copytruncate(path, self.config.log_file_max_bytes, self.config.log_files)
            except FileNotFoundError:
                continue

    def delete(self, bot_id: str) -> None:
        """Remove `<bot>.log` and its rotated files."""
        current = self.path(bot_id)
        for path in [current, *self.directory.glob(f"{current.name}.*")]:
            if path.name == current.name or path.name.removeprefix(current.name + ".").isdigit():
                path.unlink(missing_ok=True)

"""Bots' log files: `<data_dir>/logs/<bot>.log`, one per bot across its attempts, and its
rotated copies `<bot>.log.1`, … (newest first).

A bot writes its log through an inherited O_APPEND descriptor, so its output survives manager
restarts; that is also why rotation copies and truncates (as logrotate's copytruncate) rather
than renames. Tails read from the end in blocks (`orchestrators/log_tail.py`): their cost is the
answer's size, never the log's.
"""

from __future__ import annotations

import os
from pathlib import Path

from botfleet.orchestrators import process_isolation as isolation
from botfleet.orchestrators.base import BackendUnavailable, TailFirstFollower
from botfleet.orchestrators.log_tail import LogLimits, read_tail
from botfleet.orchestrators.process.config import ProcessOrchestratorConfig

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
    """Follows `<bot>.log`: the tail first, then what is appended; a file shorter than what was
    read was rotated (copytruncate), so reading starts again at its beginning."""

    def __init__(self, paths: list[Path], *, tail: int, limits: LogLimits) -> None:
        self._path = paths[0]
        try:
            self._offset = self._path.stat().st_size
        except FileNotFoundError:
            self._offset = 0
        super().__init__(read_tail(paths, tail=tail, limits=limits) if tail > 0 else "")

    def read_new(self) -> bytes:
        try:
            with self._path.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size < self._offset:
                    self._offset = 0
                if size == self._offset:
                    return b""
                handle.seek(self._offset)
                data = handle.read(min(size - self._offset, _FOLLOW_CHUNK))
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise BackendUnavailable(f"cannot read {self._path.name}: {exc}") from exc
        self._offset += len(data)
        return data


class BotLogs:
    """The logs folder of one process backend."""

    def __init__(self, config: ProcessOrchestratorConfig) -> None:
        self.config = config
        self.directory = config.data_dir / "logs"

    def ensure_dir(self) -> None:
        isolation.private_dir(self.directory)

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
        """copytruncate every file over the size cap: its last `log_file_max_bytes` go to `.1`
        after the older ones shift, then it is truncated, and the bot's next write lands at the
        new end. Output written between the copy and the truncation (microseconds) is lost."""
        try:
            paths = sorted(self.directory.glob("*.log"))
        except OSError as exc:
            raise BackendUnavailable(f"cannot list {self.directory}: {exc}") from exc
        for path in paths:
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

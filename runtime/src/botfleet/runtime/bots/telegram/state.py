"""Each chat's place in the scenario, and the last update handled, kept in the bot's state
directory so a restarted or relaunched bot resumes every conversation and never re-reads an
update it already answered.

One JSON file, replaced atomically (a temporary file, then a rename): a crash or a kill leaves the
old file or the new one, never half of one. There is no fsync, so a power loss may lose the last
saves; a killed process loses nothing. Without a state directory everything stays in memory.
Bounded: at most `max_chats` chats (the longest idle is forgotten first) and short collected values.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "telegram_state.json"
FORMAT_VERSION = 1
MAX_CHATS = 10_000
MAX_VALUE_CHARS = 1_000
MAX_VALUES = 50

log = logging.getLogger("bot.telegram.state")


@dataclass
class Chat:
    """One conversation: its step (None before /start), what the user answered, and when the
    step's automatic transition is due (wall-clock seconds, so it survives a restart)."""

    step: str | None = None
    data: dict[str, str] = field(default_factory=dict)
    auto_due: float | None = None
    seen: float = 0.0

    def remember(self, name: str, value: str) -> None:
        if name not in self.data and len(self.data) >= MAX_VALUES:
            return
        self.data[name] = value[:MAX_VALUE_CHARS]


@dataclass
class Counters:
    """What the bot's report counts; kept with the chats so a restart does not reset it."""

    messages_in: int = 0
    messages_out: int = 0
    errors: int = 0
    last_update_at: str | None = None
    last_error: str | None = None


class ConversationStore:
    """The chats, the next update id to ask for (`offset`) and the counters."""

    def __init__(self, directory: Path | None, *, max_chats: int = MAX_CHATS) -> None:
        self.path = directory / STATE_FILE if directory is not None else None
        self.max_chats = max_chats
        self.chats: dict[int, Chat] = {}
        self.offset: int | None = None
        self.counters = Counters()

    def load(self) -> None:
        """Read the saved state, if any. An unreadable file is set aside (not deleted) and the
        bot starts afresh rather than not at all."""
        if self.path is None or not self.path.exists():
            return
        try:
            saved = json.loads(self.path.read_text())
            self.offset = saved.get("offset")
            self.chats = {int(cid): Chat(**chat) for cid, chat in saved.get("chats", {}).items()}
            self.counters = Counters(**saved.get("counters", {}))
        except (OSError, ValueError, TypeError) as exc:
            aside = self.path.with_suffix(f".broken-{int(time.time())}")
            log.error("unreadable state %s (%s); kept as %s", self.path, exc, aside.name)
            with contextlib.suppress(OSError):
                self.path.rename(aside)
            self.chats, self.offset, self.counters = {}, None, Counters()

    def save(self) -> None:
        if self.path is None:
            return
        state: dict[str, Any] = {
            "version": FORMAT_VERSION,
            "offset": self.offset,
            "chats": {str(cid): asdict(chat) for cid, chat in self.chats.items()},
            "counters": asdict(self.counters),
        }
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(state, out, separators=(",", ":"))
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def chat(self, chat_id: int) -> Chat:
        """The chat, created on first contact; marks it as just seen."""
        chat = self.chats.get(chat_id)
        if chat is None:
            if len(self.chats) >= self.max_chats:
                idle = min(self.chats, key=lambda cid: self.chats[cid].seen)
                del self.chats[idle]
            chat = self.chats[chat_id] = Chat()
        chat.seen = time.time()
        return chat

    def due(self, now: float) -> list[int]:
        """Chats whose automatic transition is due, earliest first."""
        due = [
            (c.auto_due, cid) for cid, c in self.chats.items() if c.auto_due and c.auto_due <= now
        ]
        return [cid for _, cid in sorted(due)]

    def next_due(self) -> float | None:
        return min((c.auto_due for c in self.chats.values() if c.auto_due), default=None)

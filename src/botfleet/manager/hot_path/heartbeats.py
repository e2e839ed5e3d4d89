"""The heartbeat path: authenticated from memory, coalesced, written in batches.

A heartbeat is most of what a fleet sends the manager (10,000 bots at a 10 s interval: 1,000 a
second), so it takes neither a database connection nor a worker thread in the common case:
the token is found in the process' cache (`manager/hot_path/credentials.py`) and the heartbeat
joins the next batch (`manager/hot_path/heartbeat_batches.py`). A cache miss reads the bot once, on
a worker thread, and fills the cache. Every other callback locks the bot's row and goes through
`manager/lifecycle`.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.errors import ErrorCode, Unavailable
from botfleet.manager.hot_path.credentials import CredentialCache, known_bot_for_token
from botfleet.manager.hot_path.heartbeat_batches import BufferFull, HeartbeatBuffer
from botfleet.manager.lifecycle import LIVE, BotStatus


class Heartbeats:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        buffer: HeartbeatBuffer,
        cache: CredentialCache | None,
    ) -> None:
        self.sessions, self.buffer, self.cache = sessions, buffer, cache

    async def accept(self, *, token: str, bot_id: str) -> BotStatus:
        """Record one heartbeat of `bot_id`; its status as the manager knows it. 401/403 as
        every callback; 503 when the buffer is full (the runtime's next heartbeat comes)."""
        known, hashed = await known_bot_for_token(
            self.sessions, self.cache, token=token, bot_id=bot_id
        )
        if known.status in LIVE:
            try:
                self.buffer.record(known.bot_id, hashed)
            except BufferFull:
                raise Unavailable(
                    ErrorCode.HEARTBEATS_FULL,
                    "this manager holds as many bots' heartbeats as it may; retry",
                ) from None
        return known.status

    def flush(self) -> None:
        self.buffer.flush(self.sessions)

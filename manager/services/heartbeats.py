"""The heartbeat path: authenticated from memory, coalesced, written in batches.

A heartbeat is most of what a fleet sends the manager (10,000 bots at a 10 s interval: 1,000 a
second), so it takes neither a database connection nor a worker thread in the common case:
the token is found in the process' cache (`manager/credential_cache.py`) and the heartbeat
joins the next batch (`manager/liveness.py`). A cache miss reads the bot once, on a worker
thread, and fills the cache. Every other callback locks the bot's row and goes through
`manager/lifecycle`.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from manager.credential_cache import CredentialCache, KnownBot
from manager.errors import Unavailable
from manager.lifecycle import LIVE, BotStatus
from manager.liveness import BufferFull, HeartbeatBuffer
from manager.security import digest
from manager.services import auth


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
        hashed = digest(token)
        known = self.cache.get(hashed) if self.cache is not None else None
        if not isinstance(known, KnownBot):  # not cached (or an API key sent as a bot token)
            known = await run_in_threadpool(self._read, hashed)
        auth.check_bot_path(known.bot_id, bot_id)
        if known.status in LIVE:
            try:
                self.buffer.record(known.bot_id, hashed)
            except BufferFull:
                raise Unavailable(
                    "heartbeats_full",
                    "this manager holds as many bots' heartbeats as it may; retry",
                ) from None
        return known.status

    def _read(self, hashed: str) -> KnownBot:
        generation = self.cache.generation() if self.cache is not None else 0
        with self.sessions() as session:
            known = auth.known_bot_for_digest(session, hashed=hashed)
        if self.cache is not None:
            self.cache.put(hashed, known, generation=generation)
        return known

    def flush(self) -> None:
        self.buffer.flush(self.sessions)

"""Heartbeats coalesced in memory and written in one batch per interval.

A heartbeat changes nothing but `last_heartbeat_at`, and at 10,000 bots one row lock and one
commit each would be most of the manager's work. So each process keeps the latest heartbeat per
bot and writes them all in one statement every `BOTFLEET_HEARTBEAT_FLUSH_S` (never more than half
a heartbeat interval): a heartbeat reaches the database at most that late, which the reconciler's
budget (`heartbeat_s * heartbeats_missed`) dwarfs. The database stays the state of record:
transitions never go through here.

Each write is guarded in the database itself: it lands only on the attempt whose token sent it
(`token_hash`) and only while the bot is live, so a heartbeat that was authenticated from a
stale cache, or that arrives as the bot ends, can never touch another attempt or an ended bot.
Times are the database's clock (`manager/clock.py`): the clock is read once per batch and each
heartbeat is dated back by how long it waited in memory.

A batch that cannot be written (the database is down) stays in memory and goes with the next,
so an outage swallows no heartbeat and cannot make the reconciler fail live bots afterwards.
The map holds one entry per bot and is capped (`BOTFLEET_HEARTBEAT_BUFFER_MAX`); past the cap a
heartbeat is refused with 503 and the runtime's next one comes anyway.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from prometheus_client import Counter, Histogram
from sqlalchemy import bindparam, or_, update
from sqlalchemy.orm import Session, sessionmaker

from manager.clock import database_now
from manager.db import transaction
from manager.lifecycle import LIVE
from manager.models import Bot

WRITTEN = Counter(
    "botfleet_heartbeats_written_total", "Heartbeats written to the database, after coalescing"
)
FLUSH_SECONDS = Histogram(
    "botfleet_heartbeat_flush_seconds",
    "Time to write one batch of coalesced heartbeats",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

_BOTS = Bot.__table__.c
#: One UPDATE per bot, sent by the driver as one batch (a Core executemany, not the ORM's).
_WRITE = (
    update(Bot.__table__)
    .where(
        _BOTS.id == bindparam("b_id"),
        _BOTS.token_hash == bindparam("b_digest"),
        or_(*(_BOTS.status == status for status in sorted(LIVE))),  # no IN: executemany
        or_(_BOTS.last_heartbeat_at.is_(None), _BOTS.last_heartbeat_at < bindparam("b_at")),
    )
    .values(last_heartbeat_at=bindparam("b_at"))
)


class BufferFull(Exception):
    """More bots are heartbeating than the buffer may hold."""


class HeartbeatBuffer:
    """The latest heartbeat of each bot, waiting for the next batch."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._latest: dict[str, tuple[str, float]] = {}  # bot id → (token digest, monotonic)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._latest)

    def record(self, bot_id: str, digest: str) -> None:
        now = time.monotonic()
        with self._lock:
            if bot_id not in self._latest and len(self._latest) >= self.max_entries:
                raise BufferFull
            self._latest[bot_id] = (digest, now)

    def flush(self, sessions: sessionmaker[Session]) -> int:
        """Write every waiting heartbeat in one transaction; the number written."""
        with self._lock:
            batch, self._latest = self._latest, {}
        if not batch:
            return 0
        began = time.monotonic()
        try:
            with transaction(sessions) as session:
                now_db, now_mono = database_now(session), time.monotonic()
                rows = [
                    {"b_id": bot_id, "b_digest": digest, "b_at": now_db - _ago(now_mono, at)}
                    for bot_id, (digest, at) in batch.items()
                ]
                session.connection().execute(_WRITE, rows)
        except Exception:
            self._restore(batch)
            raise
        FLUSH_SECONDS.observe(time.monotonic() - began)
        WRITTEN.inc(len(batch))
        return len(batch)

    def _restore(self, batch: dict[str, tuple[str, float]]) -> None:
        """Put an unwritten batch back; a newer heartbeat of the same bot wins."""
        with self._lock:
            self._latest = batch | self._latest


def _ago(now: float, then: float) -> timedelta:
    return timedelta(seconds=now - then)

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
Times are the database's clock (`manager/core/clock.py`): the clock is read once per batch and each
heartbeat is dated back by how long it waited in memory.

A batch that cannot be written (the database is down) stays in memory and goes with the next,
so an outage swallows no heartbeat and cannot make the reconciler fail live bots afterwards.
The map holds one entry per bot and is capped (`BOTFLEET_HEARTBEAT_BUFFER_MAX`); past the cap a
heartbeat is refused with 503 and the runtime's next one comes anyway.

What waits here was heard all the same: the reconciler asks `unstored_age` before calling a bot
silent, and `writes_failing` tells it this replica cannot store what it hears (a full disk, a
write lock held by a backup), when it judges no silence at all (`background/reconciler`).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import cast

from prometheus_client import Counter, Histogram
from sqlalchemy import Table, bindparam, or_, text, update
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.clock import database_now
from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import Bot
from botfleet.manager.lifecycle import LIVE, TERMINAL

WRITTEN = Counter(
    "botfleet_heartbeats_written_total", "Heartbeats written to the database, after coalescing"
)
FLUSH_SECONDS = Histogram(
    "botfleet_heartbeat_flush_seconds",
    "Time to write one batch of coalesced heartbeats",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

_BOTS = Bot.__table__.c
#: PostgreSQL: the whole batch in one statement, its values bound as three arrays (an
#: executemany of 2,000 rows cost ~200 ms of the manager's CPU per batch; this costs a few).
_TERMINAL = ", ".join(f"'{status.value}'" for status in sorted(TERMINAL))
_WRITE_ARRAYS = text(
    f"""
    UPDATE bots AS b SET last_heartbeat_at = v.at
    FROM unnest(CAST(:ids AS varchar[]), CAST(:digests AS varchar[]),
                CAST(:ats AS timestamptz[])) AS v(id, digest, at)
    WHERE b.id = v.id AND b.token_hash = v.digest AND b.status NOT IN ({_TERMINAL})
      AND (b.last_heartbeat_at IS NULL OR b.last_heartbeat_at < v.at)
    """
)
#: Elsewhere (SQLite): one UPDATE per bot, sent as one batch (a Core executemany).
_WRITE = (
    update(cast(Table, Bot.__table__))
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
        self._writing: dict[str, tuple[str, float]] = {}  # the batch being written now
        self._writing_since: float | None = None  # monotonic, while a batch is being written
        self._failed = False  # the last batch could not be written (and waits for the next)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._latest)

    def record(self, bot_id: str, digest: str) -> None:
        now = time.monotonic()
        with self._lock:
            if bot_id not in self._latest and len(self._latest) >= self.max_entries:
                raise BufferFull
            self._latest[bot_id] = (digest, now)

    def unstored_age(self, bot_id: str) -> float | None:
        """Seconds since this process last heard `bot_id`, for a heartbeat not stored yet
        (waiting, or in the batch being written); None when none is."""
        with self._lock:
            heard = self._latest.get(bot_id) or self._writing.get(bot_id)
        return None if heard is None else time.monotonic() - heard[1]

    def writes_failing(self, stalled_after_s: float) -> bool:
        """Whether this process cannot store heartbeats now: its last batch failed, or the one
        being written has waited longer than `stalled_after_s` (a lock it cannot get)."""
        with self._lock:
            began = self._writing_since
            return self._failed or (
                began is not None and time.monotonic() - began > stalled_after_s
            )

    def flush(self, sessions: sessionmaker[Session]) -> int:
        """Write every waiting heartbeat in one transaction; the number written."""
        began = time.monotonic()
        with self._lock:
            batch, self._latest = self._latest, {}
            self._writing, self._writing_since = batch, began
        if not batch:
            self._done(failed=None)
            return 0
        try:
            with transaction(sessions) as session:
                now_db, now_mono = database_now(session), time.monotonic()
                _write(session, batch, now_db, now_mono)
        except BaseException:
            self._done(failed=batch)
            raise
        self._done(failed=None)
        FLUSH_SECONDS.observe(time.monotonic() - began)
        WRITTEN.inc(len(batch))
        return len(batch)

    def _done(self, *, failed: dict[str, tuple[str, float]] | None) -> None:
        """The batch is stored (or nothing was to be), or it failed: then it goes back, a newer
        heartbeat of the same bot winning, and the writes count as failing until one lands.
        An empty batch says nothing of the database: the state of the last write stays."""
        with self._lock:
            if failed is not None:
                self._latest = failed | self._latest
                self._failed = True
            elif self._writing:
                self._failed = False
            self._writing, self._writing_since = {}, None


def _write(
    session: Session, batch: dict[str, tuple[str, float]], now_db: datetime, now_mono: float
) -> None:
    """One batch, each heartbeat dated back by how long it waited in memory."""
    ids, digests, ats = [], [], []
    for bot_id, (digest, at) in batch.items():
        ids.append(bot_id)
        digests.append(digest)
        ats.append(now_db - timedelta(seconds=now_mono - at))
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(_WRITE_ARRAYS, {"ids": ids, "digests": digests, "ats": ats})
        return
    rows = [
        {"b_id": i, "b_digest": d, "b_at": a} for i, d, a in zip(ids, digests, ats, strict=True)
    ]
    connection.execute(_WRITE, rows)

"""API keys' `last_used_at`, written at most once a minute per key and process, in batches.

Authenticating a key is on every request's path and usually needs no query at all (the
credential cache, `manager/hot_path/credentials.py`); a write per request would undo that. So a
process notes a key's use in memory only when it has not noted that key in the last
`EVERY_S` seconds, and the `key_usage` loop writes what was noted in one statement every
`FLUSH_S` seconds. `last_used_at` is therefore at most about `EVERY_S + FLUSH_S` behind, which
is what an operator asking "is this key still in use?" needs. The write is a Core UPDATE: it is
not a change of the key that drops cache entries. A batch the database refused goes with the
next one.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, or_, update
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import ApiKey, utcnow

EVERY_S = 60.0
FLUSH_S = 10.0
MAX_TRACKED = 100_000

_KEYS = ApiKey.__table__.c
_WRITE = (
    update(cast(Table, ApiKey.__table__))
    .where(
        _KEYS.id == bindparam("k_id"),
        or_(_KEYS.last_used_at.is_(None), _KEYS.last_used_at < bindparam("k_at")),
    )
    .values(last_used_at=bindparam("k_at"))
)


class KeyUsage:
    """The uses noted since the last write, and when each key was last noted."""

    def __init__(self, sessions: sessionmaker[Session], *, every_s: float = EVERY_S) -> None:
        self.sessions = sessions
        self.every_s = every_s
        self._noted: dict[str, float] = {}  # key id → monotonic time it was last noted
        self._pending: dict[str, datetime] = {}  # key id → time of use, waiting to be written
        self._lock = threading.Lock()

    def touch(self, key_id: str) -> None:
        """Note a use of the key unless it was noted less than `every_s` ago (no lock then)."""
        now = time.monotonic()
        last = self._noted.get(key_id)
        if last is not None and now - last < self.every_s:
            return
        with self._lock:
            if len(self._noted) >= MAX_TRACKED:
                self._noted = {k: t for k, t in self._noted.items() if now - t < self.every_s}
            self._noted[key_id] = now
            self._pending[key_id] = utcnow()

    def flush(self) -> int:
        """Write the noted uses in one transaction; the number of keys written."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        try:
            with transaction(self.sessions) as session:
                rows = [{"k_id": key_id, "k_at": at} for key_id, at in batch.items()]
                session.connection().execute(_WRITE, rows)
        except Exception:
            with self._lock:
                self._pending = batch | self._pending  # a newer use of the same key wins
            raise
        return len(batch)

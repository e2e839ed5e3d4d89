"""The queue's tables: the capacities an admin sets, and the indexes that find due bots.

A capacity caps how many bots hold a slot (every live status but `queued`: `HOLDS_CAPACITY`)
fleet-wide (no label) or among the bots carrying one label (`k:v`); 0 means none may.
The bots' own queue columns (`priority`, `queued_at`, `queue_timeout_s`) are in
`core/models.py`; the partial indexes here are declared on that table (migration 0017) so that
the timers' and the queue's reads of what is due cost what is due, not every bot: each query
repeats its index's predicate word for word (`*_SQL`), as PostgreSQL's generic plans and SQLite
need to use a partial index.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from botfleet.manager.core.models import Base, Bot, UTCDateTime, new_id, utcnow

#: The queued bots (`ix_bots_queue`: admission order, higher priority first, then first come).
QUEUED_SQL = "status = 'queued'"
#: Queued bots with a timeout (`ix_bots_queue_timeout`).
QUEUE_TIMEOUT_SQL = "status = 'queued' AND queue_timeout_s IS NOT NULL"
#: Active bots with a duration limit (`ix_bots_max_duration`).
MAX_DURATION_SQL = "status = 'active' AND max_duration_s IS NOT NULL"
#: Bots waiting for their `start_at` (`ix_bots_start_at`).
START_AT_SQL = "status = 'requested' AND start_at IS NOT NULL"
#: Bots waiting out a restart backoff (`ix_bots_next_attempt`).
NEXT_ATTEMPT_SQL = "next_attempt_at IS NOT NULL"

#: The `scope` of the fleet-wide capacity; a label's is `label:<key>:<value>`.
FLEET_SCOPE = "fleet"


def label_scope(key: str, value: str) -> str:
    return f"label:{key}:{value}"


class Capacity(Base):
    """At most `max_concurrent` bots holding a slot, fleet-wide (`label_key` None) or among
    the bots with the label `label_key:label_value`."""

    __tablename__ = "capacities"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # `fleet` or `label:<key>:<value>`: one capacity per scope (unique).
    scope: Mapped[str] = mapped_column(String(420), unique=True)
    label_key: Mapped[str | None] = mapped_column(String(100))
    label_value: Mapped[str | None] = mapped_column(String(300))
    max_concurrent: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def label(self) -> str | None:
        """`key:value`, or None for the fleet-wide capacity."""
        if self.label_key is None:
            return None
        return f"{self.label_key}:{self.label_value}"

    @property
    def label_pair(self) -> tuple[str, str] | None:
        if self.label_key is None:
            return None
        return self.label_key, self.label_value or ""


_bots = Bot.__table__.c


def _partial(name: str, predicate: str, *columns: Any) -> Index:
    return Index(name, *columns, postgresql_where=text(predicate), sqlite_where=text(predicate))


QUEUE_INDEXES = (
    _partial("ix_bots_queue", QUEUED_SQL, _bots.priority.desc(), _bots.queued_at, _bots.id),
    _partial("ix_bots_queue_timeout", QUEUE_TIMEOUT_SQL, _bots.queue_timeout_s, _bots.queued_at),
    _partial("ix_bots_max_duration", MAX_DURATION_SQL, _bots.max_duration_s, _bots.active_at),
    _partial("ix_bots_start_at", START_AT_SQL, _bots.start_at),
    _partial("ix_bots_next_attempt", NEXT_ATTEMPT_SQL, _bots.next_attempt_at),
)

"""Column types and ids shared by every table module: UTC datetimes on every backend, the
status as a plain string, JSON (JSONB on PostgreSQL), and time-ordered UUIDv7 ids."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, String, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB

from botfleet.manager.core.statuses import BotStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


_last_ms = 0
_sequence = 0
_id_lock = threading.Lock()


def new_id() -> str:
    """A time-ordered UUIDv7 string: ids sort by creation, which makes cursors simple.

    Within one millisecond the 12-bit `rand_a` field counts up (RFC 9562's monotonic method), so
    ids made by one process never sort out of order.
    """
    global _last_ms, _sequence
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms, _sequence = ms, int.from_bytes(os.urandom(2), "big") & 0x7FF
        else:
            ms, _sequence = _last_ms, _sequence + 1
            if _sequence > 0xFFF:  # 4096 ids in one millisecond: borrow the next one
                _last_ms = ms = ms + 1
                _sequence = 0
        seq = _sequence
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | seq << 64 | 0b10 << 62 | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


_STATUS_BY_VALUE = {status.value: status for status in BotStatus}


class StatusType(TypeDecorator[BotStatus]):
    """A bot's status as `BotStatus`, stored as the plain string the migrations created
    (VARCHAR(16)), so no schema change and the same on PostgreSQL and SQLite."""

    impl = String(16)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return BotStatus(value).value if value is not None else None

    def process_result_value(self, value: str | None, dialect: Any) -> BotStatus | None:
        # A dict lookup: calling the Enum costs more than the rest of the row (a page of 100).
        return _STATUS_BY_VALUE[value] if value is not None else None


JSONType = JSON().with_variant(JSONB(), "postgresql")

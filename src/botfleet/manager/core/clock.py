"""The database's clock: the one clock for times that are compared with each other.

Replicas' clocks drift apart. A heartbeat recorded by one replica and judged by another (the
leader) would compare two clocks, and a leader whose clock runs ahead kills healthy bots. So
heartbeat times and the reconciler's "now" both come from the database server.

SQLite is one file on one machine: every manager using it shares the host's clock, so there
the process clock is the database's clock (and SQLite's own is only second-precise).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from botfleet.manager.core.models import utcnow


def database_now(session: Session) -> datetime:
    """The database server's current time, in UTC (PostgreSQL's `clock_timestamp()`: the real
    time, not the transaction's start)."""
    if session.get_bind().dialect.name != "postgresql":
        return utcnow()
    now: datetime = session.execute(text("SELECT clock_timestamp()")).scalar_one()
    return now.astimezone(UTC)

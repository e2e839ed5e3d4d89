"""Bots' reports coalesced in memory: at most one write per bot per interval, the latest wins.

A bot may report as often as it likes (`await self.report({...})`); each process writes a bot's
report at once when its last write is at least `BOTFLEET_REPORT_MIN_INTERVAL_S` old, and
otherwise keeps only the newest one in memory until that interval is over (the pattern of
`manager/hot_path/heartbeat_batches.py`). So a chatty bot costs one small UPDATE per interval, never
a flood, and a coalesced report waits at most about one interval (plus the flush period). Each write
is
guarded in the database like a heartbeat's: it lands only on the attempt whose token sent it,
only while the bot is live, and never over a newer report; a batch the database refused stays
in memory for the next flush. The limit is per manager process: behind N replicas a bot may be
written up to N times per interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy import or_, update
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.clock import database_now
from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import Bot
from botfleet.manager.lifecycle import LIVE
from botfleet.manager.messaging.outbox import record_report_event

RECEIVED = Counter("botfleet_reports_received_total", "Reports received from bots")
WRITTEN = Counter(
    "botfleet_reports_written_total", "Reports written to the database, after coalescing"
)


#: Told of each report that lands on a bot with health rules, in the write's transaction:
#: `(session, bot_id, row, data, at)`, `row` with the bot's `attempt`, `health_rules` and
#: `health_state` (manager/services/health_rules.py remembers since when a value holds; set
#: by manager/app.py: the hot path imports nothing above it).
on_rules_report: Callable[[Session, str, Any, dict[str, Any], datetime], None] | None = None


class ReportsFull(Exception):
    """More bots have a coalesced report waiting than the buffer may hold."""


@dataclass(frozen=True)
class Report:
    bot_id: str
    digest: str  # of the token that sent it: the write lands on that attempt only
    data: dict[str, Any]
    received: float  # monotonic


class ReportBuffer:
    """Which report of each bot is written now, and which waits for its interval to end."""

    def __init__(
        self,
        *,
        min_interval_s: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_interval_s = min_interval_s
        self.max_entries = max_entries
        self.clock = clock
        self._waiting: dict[str, Report] = {}  # bot id → its newest unwritten report
        self._written: dict[str, float] = {}  # bot id → when its last write began
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._waiting)

    def offer(self, bot_id: str, digest: str, data: dict[str, Any]) -> Report | None:
        """The report to write now, or None when it was kept to be written later (replacing
        any older one of the same bot)."""
        now = self.clock()
        report = Report(bot_id, digest, data, now)
        with self._lock:
            last = self._written.get(bot_id)
            if bot_id not in self._waiting and (last is None or now - last >= self.min_interval_s):
                self._written[bot_id] = now
                return report
            if bot_id not in self._waiting and len(self._waiting) >= self.max_entries:
                raise ReportsFull
            self._waiting[bot_id] = report
            return None

    def take_due(self, *, everything: bool = False) -> list[Report]:
        """The waiting reports whose bot's interval is over (`everything`: all of them, at
        exit), marked as written now; forgets write times older than the interval."""
        now = self.clock()
        horizon = now - self.min_interval_s
        with self._lock:
            due = [
                r
                for r in self._waiting.values()
                if everything or self._written.get(r.bot_id, horizon) <= horizon
            ]
            for report in due:
                del self._waiting[report.bot_id]
                self._written[report.bot_id] = now
            stale = [
                b for b, at in self._written.items() if at < horizon and b not in self._waiting
            ]
            for bot_id in stale:
                del self._written[bot_id]
        return due

    def restore(self, reports: list[Report]) -> None:
        """Put unwritten reports back; a newer report of the same bot wins."""
        with self._lock:
            for report in reports:
                newer = self._waiting.get(report.bot_id)
                if newer is None or newer.received < report.received:
                    self._waiting[report.bot_id] = report


def write_reports(sessions: sessionmaker[Session], reports: list[Report], *, now: float) -> int:
    """Write `reports` in one transaction, each with an event (SSE `report`, webhook
    `bot.report`); the number that landed. Raises when the database refuses (nothing written)."""
    if not reports:
        return 0
    landed = 0
    with transaction(sessions) as session:
        db_now = database_now(session)
        for report in reports:
            at = db_now - timedelta(seconds=max(now - report.received, 0.0))
            row = session.execute(
                update(Bot)
                .where(
                    Bot.id == report.bot_id,
                    Bot.token_hash == report.digest,
                    Bot.status.in_(sorted(LIVE)),
                    or_(Bot.reported_at.is_(None), Bot.reported_at < at),
                )
                .values(report=report.data, reported_at=at)
                .returning(Bot.user_id, Bot.attempt, Bot.health_rules, Bot.health_state)
                .execution_options(synchronize_session=False)
            ).one_or_none()
            if row is not None:
                record_report_event(
                    session, user_id=row.user_id, bot_id=report.bot_id, data=report.data, at=at
                )
                if row.health_rules and on_rules_report is not None:
                    on_rules_report(session, report.bot_id, row, report.data, at)
                landed += 1
    WRITTEN.inc(landed)
    return landed

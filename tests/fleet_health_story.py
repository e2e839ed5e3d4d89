"""One small fleet history shared by the Fleet-health tests: the arithmetic alone
(tests/unit/test_fleet_health_figures.py) and the same story read from a database
(tests/integration/services/test_fleet_health.py) must give the same chart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from botfleet.manager.lifecycle.states import BotStatus
from botfleet.manager.ui import health_data as fh

S = BotStatus
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def story() -> tuple[list[fh.BotLife], list[fh.Change]]:
    """A: active since before the window, stopped 22 min ago, completed 21 min ago.
    B: created 12 min ago, starting at 11, active at 10.5. C: created 7 min ago, still waiting."""
    bots = [
        fh.BotLife("a", ago(70), S.COMPLETED),
        fh.BotLife("b", ago(12), S.ACTIVE),
        fh.BotLife("c", ago(7), S.REQUESTED),
    ]
    changes = [
        fh.Change("a", S.ACTIVE, ago(22)),
        fh.Change("a", S.STOPPING, ago(21)),
        fh.Change("b", S.REQUESTED, ago(11)),
        fh.Change("b", S.STARTING, ago(10.5)),
    ]
    return bots, changes


def expected() -> list[dict[BotStatus, int]]:
    """The story above at the end of each bucket: -55, -50, …, -5, now."""
    rows = []
    for minutes in range(55, -1, -5):
        row = dict.fromkeys(fh.STATUS_ORDER, 0)
        row[S.ACTIVE if minutes > 22 else S.COMPLETED] += 1  # A
        if minutes <= 10:
            row[S.ACTIVE] += 1  # B (not yet created at -15)
        if minutes <= 5:
            row[S.REQUESTED] += 1  # C
        rows.append(row)
    return rows

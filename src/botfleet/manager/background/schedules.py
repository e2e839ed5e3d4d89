"""The schedules loop: leader-only, every `timer_interval_s` (0.5 s by default), so a schedule
fires, and a scheduled bot is stopped, within about a second of its time.

Each pass reads only what is due, through indexes (`schedules.next_fire_at`,
`schedule_firings.stop_at`), then fires each schedule and makes each stop in a transaction of
its own (`manager/services/schedule_firing.py`): one schedule's error never holds the others.
A schedule whose firing keeps raising is recorded `failed` and moves on to its next fire time.
"""

from __future__ import annotations

import logging
from collections import Counter

from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.background.loops import (
    IntervalLoop,
    Lease,
    StepsFailed,
    database_unreachable,
    describe,
)
from botfleet.manager.core.models import utcnow
from botfleet.manager.services.bot_requests import BotRequests
from botfleet.manager.services.schedule_firing import ScheduleFirer

log = logging.getLogger(__name__)

#: Passes in a row a schedule's firing may raise before it is recorded failed and skipped.
TRIES = 3


class ScheduleLoop:
    def __init__(self, *, sessions: sessionmaker[Session], requests: BotRequests) -> None:
        self.firer = ScheduleFirer(sessions=sessions, requests=requests)
        self._errors: Counter[str] = Counter()  # schedule id -> passes in a row it raised

    def loop(self, *, interval_s: float, lease: Lease) -> IntervalLoop:
        return IntervalLoop("schedules", self.run_once, interval_s=interval_s, lease=lease)

    def run_once(self) -> None:
        """Fire what is due, then make the stops that are due."""
        now = utcnow()
        failures: list[str] = []
        for schedule_id in self.firer.due_schedules(now):
            try:
                self.firer.fire(schedule_id)
                self._errors.pop(schedule_id, None)
            except Exception as exc:
                if database_unreachable(exc):
                    raise
                failures.append(self._failed(schedule_id, exc))
        for firing_id in self.firer.due_stops(now):
            try:
                self.firer.stop(firing_id)
            except Exception as exc:
                if database_unreachable(exc):
                    raise
                log.exception("stopping the bot of schedule firing %s failed", firing_id)
                failures.append(f"stop {firing_id}: {describe(exc)}")
        if failures:
            raise StepsFailed("; ".join(failures))

    def _failed(self, schedule_id: str, exc: Exception) -> str:
        log.exception("firing schedule %s failed", schedule_id)
        self._errors[schedule_id] += 1
        if self._errors[schedule_id] >= TRIES:
            del self._errors[schedule_id]
            self.firer.give_up(schedule_id, describe(exc))
        return f"schedule {schedule_id}: {describe(exc)}"

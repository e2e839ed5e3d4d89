"""The leader's timers: what is due fires within `timer_interval_s` of its time (0.5 s by
default, at most 1), not on the reconciler's tick (5 s by default).

Each tick asks the database only for what is due, through the partial indexes of
`core/queue_models.py` (each query repeats its index's predicate word for word):

- `start_at`: a `requested` bot whose time came is launched;
- `max_duration_s`: an active bot past its duration is stopped (`max_duration`, by the
  scheduler); one grouped read of the durations in use, then only the due rows;
- restart backoffs: a bot whose `next_attempt_at` came is relaunched;
- the queue: queued bots whose `queue_timeout_s` ran out fail (`queue_timeout`), then the bots
  that fit now are admitted and launched (`services/queue.py`), and `botfleet_queued_bots` is
  set.

The reconciler still repairs each of these on its own tick (a manager that was down, a start
missed long ago): the timers only make them prompt. Launches and relaunches go to the
launcher's threads; a due start or relaunch fires once per due time in this process, so one
that waits (its kind's env being built) is not asked again every tick. How late each fired is
`botfleet_timer_lateness_seconds{timer}`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.background.loops import IntervalLoop, Lease, run_steps
from botfleet.manager.core import metrics
from botfleet.manager.core.models import Bot, utcnow
from botfleet.manager.core.queue_models import MAX_DURATION_SQL, NEXT_ATTEMPT_SQL, START_AT_SQL
from botfleet.manager.core.settings import Settings
from botfleet.manager.lifecycle import BotStatus, IllegalTransition, Source
from botfleet.manager.services import queue, queue_admission
from botfleet.manager.services.bot_requests import BotRequests
from botfleet.manager.services.launcher import Launcher

log = logging.getLogger(__name__)

#: A start or backoff due longer ago than this is the reconciler's (a manager that was down):
#: the timers' reads stay a narrow range of their index.
FIRE_WINDOW = timedelta(seconds=60)


class Timers:
    """One tick fires everything due (`run_once`); `timers_loop` runs it on the leader."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        settings: Settings,
        launcher: Launcher,
        bots: BotRequests,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.launcher = launcher
        self.bots = bots  # a timed stop goes the API's way (`stop_bot`)
        #: (timer, bot id) → the due time it fired for, within FIRE_WINDOW.
        self._fired: dict[tuple[str, str], datetime] = {}

    def run_once(self) -> None:
        """Every timer once; one timer's failure never starves the others (`StepsFailed`)."""
        self._forget_old(utcnow())
        steps: tuple[Callable[[], object], ...] = (
            self.fire_starts,
            self.fire_max_durations,
            self.fire_restarts,
            self.expire_queue,
            self.admit_queue,
        )
        run_steps(steps, what="timers")

    # ---- one per timer -------------------------------------------------------------------------

    def fire_starts(self) -> int:
        """Launch the `requested` bots whose `start_at` came."""
        now = utcnow()
        with self.sessions() as session:
            rows = session.execute(
                select(Bot.id, Bot.start_at).where(
                    text(START_AT_SQL), Bot.start_at <= now, Bot.start_at > now - FIRE_WINDOW
                )
            ).all()
        fired = 0
        for bot_id, due in rows:
            if due is not None and self._first_time("start_at", bot_id, due, now):
                self.launcher.submit(self.launcher.launch, bot_id)
                fired += 1
        return fired

    def fire_max_durations(self) -> int:
        """Stop the active bots past their `max_duration_s` (`max_duration`): one grouped read
        of the durations in use (the oldest `active_at` of each), then the due rows of those
        durations that have any."""
        now = utcnow()
        due: list[tuple[str, datetime, int]] = []
        with self.sessions() as session:
            groups = session.execute(
                select(Bot.max_duration_s, func.min(Bot.active_at))
                .where(text(MAX_DURATION_SQL))
                .group_by(Bot.max_duration_s)
            ).all()
            for duration_s, oldest in groups:
                if duration_s is None or oldest is None:
                    continue
                cut = now - timedelta(seconds=duration_s)
                if oldest > cut:
                    continue
                rows = session.execute(
                    select(Bot.id, Bot.active_at).where(
                        text(MAX_DURATION_SQL),
                        Bot.max_duration_s == duration_s,
                        Bot.active_at <= cut,
                    )
                )
                due += [(bot_id, at, duration_s) for bot_id, at in rows if at is not None]
        for bot_id, active_at, duration_s in due:
            try:
                self.bots.stop_bot(bot_id=bot_id, user_id=None, source=Source.SCHEDULER,
                                   reason="max_duration")  # fmt: skip
            except IllegalTransition as exc:
                log.info("bot %s changed before its max_duration stop: %s", bot_id, exc)
                continue
            late = now - (active_at + timedelta(seconds=duration_s))
            metrics.TIMER_LATENESS_SECONDS.labels("max_duration").observe(late.total_seconds())
        return len(due)

    def fire_restarts(self) -> int:
        """Relaunch the bots whose restart backoff (`next_attempt_at`) is over."""
        now = utcnow()
        with self.sessions() as session:
            rows = session.execute(
                select(Bot.id, Bot.next_attempt_at).where(
                    text(NEXT_ATTEMPT_SQL),
                    Bot.next_attempt_at <= now,
                    Bot.next_attempt_at > now - FIRE_WINDOW,
                    Bot.status == BotStatus.STARTING,
                )
            ).all()
        fired = 0
        for bot_id, due in rows:
            if due is not None and self._first_time("restart", bot_id, due, now):
                self.launcher.submit(self.launcher.relaunch, bot_id)
                fired += 1
        return fired

    def expire_queue(self) -> int:
        return queue.expire_waiting(self.sessions)

    def admit_queue(self) -> int:
        """Admit what fits now; the queued-bots gauge, from the same tick."""
        with self.sessions() as session:
            waiting = queue.queued_total(session)
        metrics.QUEUED_BOTS.set(waiting)
        if not waiting:
            return 0
        return queue_admission.admit_waiting(self.sessions, self.launcher)

    # ---- firing once ---------------------------------------------------------------------------

    def _first_time(self, timer: str, bot_id: str, due: datetime, now: datetime) -> bool:
        """Whether this is the first tick to find `bot_id`'s `timer` due at `due` (then noted,
        and its lateness observed)."""
        key = (timer, bot_id)
        if self._fired.get(key) == due:
            return False
        self._fired[key] = due
        metrics.TIMER_LATENESS_SECONDS.labels(timer).observe((now - due).total_seconds())
        return True

    def _forget_old(self, now: datetime) -> None:
        """Due times out of every timer's window can no longer come back."""
        gone = now - FIRE_WINDOW
        for key in [key for key, due in self._fired.items() if due <= gone]:
            del self._fired[key]


def timers_loop(timers: Timers, *, settings: Settings, lease: Lease) -> IntervalLoop:
    """The timers' loop: every `timer_interval_s`, on the leader only."""
    return IntervalLoop(
        "timers", timers.run_once, interval_s=settings.timer_interval_s, lease=lease
    )

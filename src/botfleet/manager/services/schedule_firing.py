"""Firing schedules: at a fire time, start a bot from the template through the same service as
POST /bots, and stop it when its duration or window ends. The leader's loop calls these
(`manager/background/schedules.py`); each schedule and each stop is its own transaction.

Race-free across replicas and passes: a schedule is fired under its row lock (`FOR UPDATE SKIP
LOCKED` on PostgreSQL; SQLite write transactions are exclusive) and only while its
`next_fire_at` is still due, and the fire time moves on in the same transaction; a firing is
also unique per schedule and fire time in the database. A stop is claimed the same way.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy import delete, false, select
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.errors import BotfleetError, NotFound
from botfleet.manager.core.models import Bot, User, utcnow
from botfleet.manager.core.schedule_models import Schedule, ScheduleFiring
from botfleet.manager.lifecycle import LIVE, Source
from botfleet.manager.messaging.outbox import record_event
from botfleet.manager.services.audit import set_request_actor
from botfleet.manager.services.bot_requests import BotRequests
from botfleet.manager.services.schedule_times import (
    FiringPlan,
    next_fire,
    parse_cron,
    plan_firing,
)
from botfleet.manager.services.schedules import KEEP_FIRINGS, template_request
from botfleet.manager.services.unit_of_work import unit_of_work

log = logging.getLogger(__name__)

LIVE_VALUES = [s.value for s in LIVE]
#: Schedules fired, and stops made, per pass at most (the rest in the next pass, 0.5 s later).
BATCH = 100


class ScheduleFirer:
    def __init__(self, *, sessions: sessionmaker[Session], requests: BotRequests) -> None:
        self.sessions = sessions
        self.requests = requests

    # ---- what is due -------------------------------------------------------------------------

    def due_schedules(self, now: datetime) -> list[str]:
        """The schedules whose fire time has come, earliest first (`ix_schedules_next_fire_at`)."""
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Schedule.id)
                    .where(Schedule.next_fire_at <= now, Schedule.paused == false())
                    .order_by(Schedule.next_fire_at, Schedule.id)
                    .limit(BATCH)
                )
            )

    def due_stops(self, now: datetime) -> list[int]:
        """The firings whose bot is due to stop (`ix_schedule_firings_stop_at`)."""
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(ScheduleFiring.id)
                    .where(ScheduleFiring.stop_at <= now)
                    .order_by(ScheduleFiring.stop_at)
                    .limit(BATCH)
                )
            )

    # ---- firing ------------------------------------------------------------------------------

    def fire(self, schedule_id: str, now: datetime | None = None) -> str | None:
        """Fire the schedule if it is still due: its outcome (`started`, `queued`, `skipped`,
        `failed`, `missed`), or None when there was nothing to do (fired meanwhile, paused,
        changed, deleted, or held by another replica)."""
        now = now or utcnow()
        with unit_of_work(self.sessions) as session:
            set_request_actor(session, Source.SCHEDULER.value)
            schedule = session.scalar(
                select(Schedule)
                .where(
                    Schedule.id == schedule_id,
                    Schedule.next_fire_at <= now,
                    Schedule.paused == false(),
                )
                .with_for_update(skip_locked=True)
            )
            if schedule is None or schedule.next_fire_at is None:
                return None
            plan = plan_firing(
                parse_cron(schedule.cron, schedule.timezone),
                due=schedule.next_fire_at,
                now=now,
                missed=schedule.missed,  # type: ignore[arg-type]  # stored from the Literal
                duration_s=schedule.duration_s,
                window_end=schedule.window_end,
            )
            schedule.next_fire_at = plan.next_fire_at
            schedule.updated_at = now
            outcome = None
            if plan.missed_from is not None:
                outcome = self._record_missed(session, schedule, plan, now)
            if plan.fire_for is not None:
                outcome = self._start(session, schedule, plan, now)
            self._prune(session, schedule.id)
            return outcome

    def _record_missed(
        self, session: Session, schedule: Schedule, plan: FiringPlan, now: datetime
    ) -> str:
        assert plan.missed_from is not None and plan.missed_until is not None
        window_over = plan.fire_for is None and schedule.missed == "run_once"
        span = (
            f"{plan.missed_from.isoformat()}"
            if plan.missed_from == plan.missed_until
            else f"{plan.missed_from.isoformat()} to {plan.missed_until.isoformat()}"
        )
        detail = f"fire time {span} passed while the manager was not firing"
        if window_over:
            detail += "; its duration or window had ended: no bot (missed: run_once)"
        self._record(
            session,
            schedule,
            fired_for=plan.missed_from,
            now=now,
            outcome="missed",
            reason="window_over" if window_over else "missed",
            detail=detail,
            last_fired_at=plan.missed_until,
        )
        return "missed"

    def _start(self, session: Session, schedule: Schedule, plan: FiringPlan, now: datetime) -> str:
        """The overlap policy, then a bot from the template through POST /bots' own service:
        its refusal (over the limit, a duplicate, a kind since retired) is the firing's."""
        assert plan.fire_for is not None
        owner = session.get(User, schedule.user_id)
        if owner is None or owner.disabled_at is not None:  # its keys answer 401: no new bots
            return self._record(session, schedule, fired_for=plan.fire_for, now=now,
                                outcome="failed", reason="user_disabled",
                                detail="the schedule's user is disabled")  # fmt: skip
        live = session.execute(
            select(Bot.id, Bot.status)
            .where(Bot.schedule_id == schedule.id, Bot.status.in_(LIVE_VALUES))
            .order_by(Bot.id)
        ).all()
        if live and schedule.overlap == "skip":
            bot_id, status = live[-1]
            return self._record(session, schedule, fired_for=plan.fire_for, now=now,
                                outcome="skipped", reason="overlap",
                                detail=f"bot {bot_id} is still {status}")  # fmt: skip
        if schedule.overlap == "replace":  # before the start: the new bot may need the place
            for bot_id, _ in live:
                self.requests.stop_bot(
                    session,
                    bot_id=bot_id,
                    user_id=None,
                    source=Source.SCHEDULER,
                    reason="schedule_replaced",
                )
        try:
            with session.begin_nested():
                data = template_request(schedule, self.requests.box)
                bot = self.requests.start_bot(session, user_id=schedule.user_id, data=data)
                bot.schedule_id = schedule.id
        except BotfleetError as exc:
            return self._record(session, schedule, fired_for=plan.fire_for, now=now,
                                outcome="failed", reason=exc.code, detail=exc.message)  # fmt: skip
        except ValidationError as exc:
            return self._record(session, schedule, fired_for=plan.fire_for, now=now,
                                outcome="failed", reason="invalid_template",
                                detail=str(exc).splitlines()[0])  # fmt: skip
        record_event(
            session,
            bot=bot,
            kind="schedule",
            data={"schedule_id": schedule.id, "fired_for": plan.fire_for.isoformat()},
        )
        return self._record(
            session,
            schedule,
            fired_for=plan.fire_for,
            now=now,
            outcome="queued" if bot.status == "queued" else "started",
            bot_id=bot.id,
            stop_at=plan.stop_at,
            stop_reason=plan.stop_reason,
        )

    def _record(
        self,
        session: Session,
        schedule: Schedule,
        *,
        fired_for: datetime,
        now: datetime,
        outcome: str,
        reason: str | None = None,
        detail: str = "",
        bot_id: str | None = None,
        stop_at: datetime | None = None,
        stop_reason: str | None = None,
        last_fired_at: datetime | None = None,
    ) -> str:
        """One firing row, and the schedule's `last_*` as GET shows them."""
        session.add(
            ScheduleFiring(
                schedule_id=schedule.id,
                fired_for=fired_for,
                at=now,
                outcome=outcome,
                bot_id=bot_id,
                reason=reason,
                detail=detail[:2000],
                stop_at=stop_at,
                stop_reason=stop_reason,
            )
        )
        schedule.last_fired_at = last_fired_at or fired_for
        schedule.last_outcome, schedule.last_bot_id, schedule.last_reason = outcome, bot_id, reason
        return outcome

    def _prune(self, session: Session, schedule_id: str) -> None:
        """Keep the newest KEEP_FIRINGS firings (and any whose stop is still to come)."""
        session.flush()
        oldest_kept = session.scalar(
            select(ScheduleFiring.id)
            .where(ScheduleFiring.schedule_id == schedule_id)
            .order_by(ScheduleFiring.id.desc())
            .offset(KEEP_FIRINGS - 1)
            .limit(1)
        )
        if oldest_kept is not None:
            session.execute(
                delete(ScheduleFiring).where(
                    ScheduleFiring.schedule_id == schedule_id,
                    ScheduleFiring.id < oldest_kept,
                    ScheduleFiring.stop_at.is_(None),
                )
            )

    def give_up(self, schedule_id: str, error: str, now: datetime | None = None) -> None:
        """A firing that raised: record it `failed` (`internal_error`) and move past its fire
        time, so one broken schedule never holds the loop (no next time: it is paused)."""
        now = now or utcnow()
        with unit_of_work(self.sessions) as session:
            schedule = session.scalar(
                select(Schedule)
                .where(Schedule.id == schedule_id, Schedule.next_fire_at <= now)
                .with_for_update(skip_locked=True)
            )
            if schedule is None or schedule.next_fire_at is None:
                return
            fired_for = schedule.next_fire_at
            try:
                schedule.next_fire_at = next_fire(parse_cron(schedule.cron, schedule.timezone), now)
            except BotfleetError:
                schedule.next_fire_at, schedule.paused = None, True
            self._record(session, schedule, fired_for=fired_for, now=now, outcome="failed",
                         reason="internal_error", detail=error)  # fmt: skip

    # ---- stops -------------------------------------------------------------------------------

    def stop(self, firing_id: int, now: datetime | None = None) -> bool:
        """Stop the bot of a firing whose stop is due (actor `scheduler`, reason
        `schedule_duration` or `schedule_window`); False when there was nothing to do."""
        now = now or utcnow()
        with unit_of_work(self.sessions) as session:
            firing = session.scalar(
                select(ScheduleFiring)
                .where(ScheduleFiring.id == firing_id, ScheduleFiring.stop_at <= now)
                .with_for_update(skip_locked=True)
            )
            if firing is None:
                return False
            firing.stop_at = None
            if firing.bot_id is not None:
                with contextlib.suppress(NotFound):  # the bot was deleted meanwhile
                    self.requests.stop_bot(
                        session,
                        bot_id=firing.bot_id,
                        user_id=None,
                        source=Source.SCHEDULER,
                        reason=firing.stop_reason or "schedule_duration",
                    )
            if session.get(Schedule, firing.schedule_id) is None:
                session.delete(firing)  # the schedule is gone: this row only held the stop
            return True

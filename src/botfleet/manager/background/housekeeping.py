"""Housekeeping: the periodic chores that are not about a bot's lifecycle.

- re-publish unacknowledged commands with backoff, expire the overdue and those of ended bots;
- forget idempotency answers older than 24 hours;
- refresh the `botfleet_bots{status,backend}` gauges;
- converge bots' Redis users: write the missing ones (a restarted Redis forgot them), delete
  those of ended bots (manager/messaging/bot_acl.py);
- rotate bots' log files where the backend leaves that to us (the process backend);
- prune what is past retention: ended bots with their history, log files and Redis users, old
  outbox events and webhook deliveries, in small batches (manager/services/retention.py).

`Housekeeping(...).run_once()` runs each chore once, every chore isolated from the others'
failures, and returns the errors (also kept in `last_errors`); `tick()`, the manager's loop,
raises when a chore failed, so /readyz shows it. Only the leader replica runs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.background.loops import StepsFailed
from botfleet.manager.core import metrics
from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import Bot, Command, utcnow
from botfleet.manager.core.settings import Settings
from botfleet.manager.lifecycle import TERMINAL, BotStatus
from botfleet.manager.messaging import bot_acl as bot_redis
from botfleet.manager.services import commands as command_records
from botfleet.manager.services import idempotency, retention
from botfleet.manager.services.command_publisher import CommandPublisher
from botfleet.manager.services.launcher import Launcher

log = logging.getLogger(__name__)


class Housekeeping:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        settings: Settings,
        launcher: Launcher,
        publisher: CommandPublisher,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.launcher = launcher  # the engine's logs, the bots' Redis users
        self.publisher = publisher
        self.last_errors: list[str] = []

    def run_once(self) -> list[str]:
        """One round of every chore; returns what failed, as `chore: error` lines."""
        self.last_errors = []
        chores: tuple[Callable[[], None], ...] = (
            self.reconcile_commands,
            self.sweep_expired_records,
            self.update_gauges,
            self.converge_redis_users,
            self.rotate_logs,
            self.prune,
        )
        for chore in chores:
            try:
                chore()
            except Exception as exc:
                metrics.RECONCILER_ERRORS.labels(chore.__name__).inc()
                self.last_errors.append(f"{chore.__name__}: {exc}")
                log.exception("housekeeping %s failed", chore.__name__)
        return self.last_errors

    def tick(self) -> None:
        """One round for the manager's loop: raises `StepsFailed` naming the chores that failed."""
        if errors := self.run_once():
            raise StepsFailed("; ".join(errors))

    def rotate_logs(self) -> None:
        """Keep each bot's log files within BOTFLEET_LOG_FILE_MAX_BYTES times BOTFLEET_LOG_FILES
        (a no-op for engines that rotate their own)."""
        self.launcher.orchestrator.rotate_logs()

    def reconcile_commands(self) -> None:
        """Re-publish unacknowledged commands with backoff; expire the overdue and those of
        ended bots."""
        now = utcnow()
        with transaction(self.sessions) as session:
            open_commands = session.execute(
                select(Command, Bot.status)
                .join(Bot, Bot.id == Command.bot_id)
                .where(Command.status.in_(command_records.OPEN_STATUSES))
            ).all()
            due: list[Command] = []
            for command, bot_status in open_commands:
                ended = bot_status in TERMINAL
                if ended or command.expires_at <= now:
                    reason = "the bot ended first" if ended else "not acknowledged in time"
                    command_records.expire(session, command, reason=reason)
                elif command.next_publish_at is None or command.next_publish_at <= now:
                    due.append(command)
        for command in due:
            self.publisher.publish(command)

    def converge_redis_users(self) -> None:
        """Every bot holding a token has its Redis user; ended bots' users are gone. One
        `ACL USERS` a tick; Redis being down fails this chore only."""
        if self.launcher.redis_users is not None:
            bot_redis.converge(self.sessions, self.launcher.redis_users)

    def prune(self) -> None:
        """Delete what is past retention, each prune within a budget of DELETE statements a
        tick (the rest waits for the next tick)."""
        settings = self.settings
        retention.prune_ended_bots(
            self.sessions,
            retention.Forget.of(self.launcher),
            days=settings.retain_ended_bots_days,
            budget=retention.Budget(),
        )
        retention.prune_events(
            self.sessions, days=settings.retain_events_days, budget=retention.Budget()
        )

    def sweep_expired_records(self) -> None:
        """Idempotency answers are kept for 24 hours."""
        with transaction(self.sessions) as session:
            idempotency.sweep(session)

    def update_gauges(self) -> None:
        with self.sessions() as session:
            counts = {
                (status, backend): n
                for status, backend, n in session.execute(
                    select(Bot.status, Bot.orchestrator, func.count()).group_by(
                        Bot.status, Bot.orchestrator
                    )
                ).all()
            }
        backends = {backend for _, backend in counts} | {self.launcher.orchestrator.name}
        for status in BotStatus:
            for backend in backends:
                metrics.BOTS.labels(status.value, backend).set(counts.get((status, backend), 0))

"""The reconciler: compares the database with the orchestrator's view and repairs the difference.

One small function per state, each re-reading the bot under its row lock before acting; one
bot's error never stops the tick. It reaps only on positive proof of death (the engine says the
workload exited, or a listing confirms it is gone): an engine that cannot be asked changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select

from manager import metrics
from manager.db import transaction
from manager.lifecycle import TERMINAL, BotStatus, IllegalTransition, Source
from manager.models import Bot, BotAttempt, Command, utcnow
from manager.services import bots as bot_records
from manager.services import commands as command_records
from manager.services import idempotency
from manager.services.attempts import end_attempt, record_attempt_exit
from manager.services.fleet import Fleet
from orchestrators.base import (
    LABEL_ATTEMPT,
    LABEL_BOT_ID,
    OrchestratorError,
    Workload,
    WorkloadState,
    WorkloadStatus,
)

log = logging.getLogger(__name__)
S = BotStatus
LAST_LOG_LINES = 200  # kept on the bot when its workload is removed


class Reconciler:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.settings = fleet.settings
        self.orchestrator = fleet.orchestrator
        self.last_errors: list[str] = []

    # ---- driving ---------------------------------------------------------------------------

    def run_once(self) -> None:
        """One full pass; each step and each bot is isolated from the others' failures."""
        self.last_errors = []
        for step in (
            self.reconcile_requested,
            self.reconcile_starting,
            self.reconcile_active,
            self.reconcile_stopping,
            self.reconcile_workloads,
            self.reconcile_commands,
            self.sweep_expired_records,
            self.update_gauges,
        ):
            try:
                step()
            except Exception as exc:
                metrics.RECONCILER_ERRORS.labels(step.__name__).inc()
                self.last_errors.append(f"{step.__name__}: {exc}")
                log.exception("reconciler step %s failed", step.__name__)

    def _each(self, status: BotStatus, fix: Callable[[str], None]) -> None:
        with self.fleet.sessions() as session:
            ids = list(session.scalars(select(Bot.id).where(Bot.status == status.value)))
        for bot_id in ids:
            try:
                fix(bot_id)
            except IllegalTransition as exc:
                log.info("bot %s changed underneath the reconciler: %s", bot_id, exc)
            except Exception as exc:
                metrics.RECONCILER_ERRORS.labels(f"reconcile_{status.value}").inc()
                self.last_errors.append(f"{bot_id}: {exc}")
                log.exception("reconciling bot %s failed", bot_id)

    def _repair(
        self,
        bot_id: str,
        expected: BotStatus,
        target: BotStatus,
        *,
        reason: str,
        detail: str = "",
        exit_code: int | None = None,
        source: Source = Source.RECONCILER,
    ) -> None:
        """Transition if the bot is still in `expected` (it may have moved meanwhile)."""
        with transaction(self.fleet.sessions) as session:
            bot = bot_records.lock_bot(session, bot_id)
            if bot.status != expected:
                log.info("bot %s is now %s; no %s repair", bot_id, bot.status, reason)
                return
            end_attempt(session, bot, failed=target == S.FAILED, reason=reason, source=source,
                        detail=detail, exit_code=exit_code)  # fmt: skip
        metrics.RECONCILER_REPAIRS.labels(reason).inc()
        log.warning("bot %s: %s → %s (%s) %s", bot_id, expected, target, reason, detail)

    def _read(self, bot_id: str) -> Bot:
        with self.fleet.sessions() as session:
            return bot_records.get_bot(session, bot_id, user_id=None)

    def _older_than(self, moment: datetime | None, seconds: float) -> bool:
        return moment is not None and moment < utcnow() - timedelta(seconds=seconds)

    def confirmed_status(self, bot: Bot) -> WorkloadStatus | None:
        """The workload's status when the engine positively knows it, else None.

        A "not found" from inspect is confirmed by a listing before anyone acts on it.
        """
        if not bot.runtime_ref:
            return None
        try:
            status = self.orchestrator.inspect(bot.runtime_ref)
            if status.state == WorkloadState.NOT_FOUND:
                listed = self.fleet.workloads(**{LABEL_BOT_ID: bot.id})
                if any(w.runtime_ref == bot.runtime_ref for w in listed):
                    return None
        except OrchestratorError as exc:
            log.info("cannot inspect bot %s: %s", bot.id, exc)
            return None
        return status if status.state != WorkloadState.UNKNOWN else None

    # ---- per-state steps -------------------------------------------------------------------

    def reconcile_requested(self) -> None:
        """Launch requested bots whose time has come (the POST's launch may have been lost in
        a crash); give up on scheduled starts missed by too much."""

        def fix(bot_id: str) -> None:
            bot = self._read(bot_id)
            if bot.start_at is None or bot.start_at <= utcnow():
                self.fleet.launch(bot_id)  # gives up on a start missed by too much

        self._each(S.REQUESTED, fix)

    def reconcile_starting(self) -> None:
        def fix(bot_id: str) -> None:
            bot = self._read(bot_id)
            if bot.next_attempt_at is not None:  # a restart waiting for its backoff
                if bot.next_attempt_at <= utcnow():
                    self.fleet.relaunch(bot_id)
                return
            if self._older_than(bot.started_at, self.settings.start_timeout_s):
                final = self._force_stop(bot)
                self._repair(
                    bot_id,
                    S.STARTING,
                    S.FAILED,
                    reason="start_timeout",
                    exit_code=_exit_code(final),
                    detail=_joined(f"not started within {self.settings.start_timeout_s:g}s", final),
                )
                return
            if bot.runtime_ref is None:
                if self._older_than(bot.started_at, self.settings.launch_timeout_s):
                    self._retry_lost_launch(bot)
                return
            status = self.confirmed_status(bot)
            if status is not None and status.is_gone:
                self._repair(
                    bot_id,
                    S.STARTING,
                    S.FAILED,
                    reason="exited_before_started",
                    exit_code=status.exit_code,
                    detail=status.detail,
                )

        self._each(S.STARTING, fix)

    def _retry_lost_launch(self, bot: Bot) -> None:
        """`starting` with no workload long after the launch began: the manager died between
        recording the launch and reaching the engine. Launch again once a listing confirms that
        nothing runs for this bot (a workload found instead is adopted by `reconcile_workloads`)."""
        listed = self.fleet.workloads(**{LABEL_BOT_ID: bot.id})
        if any(w.status.state == WorkloadState.RUNNING for w in listed):
            return
        for leftover in listed:  # e.g. a container created but never started
            self.orchestrator.stop(leftover.runtime_ref, grace_s=self.settings.kill_after_s)
        with transaction(self.fleet.sessions) as session:
            locked = bot_records.lock_bot(session, bot.id)
            if locked.status != S.STARTING or locked.runtime_ref or locked.next_attempt_at:
                return
            locked.next_attempt_at = utcnow()
        log.warning("bot %s: its launch was lost; launching again", bot.id)
        metrics.RECONCILER_REPAIRS.labels("launch_retried").inc()
        self.fleet.relaunch(bot.id)

    def reconcile_active(self) -> None:
        def fix(bot_id: str) -> None:
            bot = self._read(bot_id)
            status = self.confirmed_status(bot)
            if status is not None and status.is_gone:
                if status.exit_code == 0:
                    self._repair(bot_id, S.ACTIVE, S.COMPLETED, reason="exited", exit_code=0)
                else:
                    self._repair(
                        bot_id,
                        S.ACTIVE,
                        S.FAILED,
                        reason="workload_vanished",
                        exit_code=status.exit_code,
                        detail=status.detail,
                    )
                return
            if self._older_than(bot.last_heartbeat_at, self.settings.heartbeat_lost_after_s):
                final = self._force_stop(bot)
                self._repair(
                    bot_id,
                    S.ACTIVE,
                    S.FAILED,
                    reason="heartbeat_lost",
                    exit_code=_exit_code(final),
                    detail=_joined(
                        f"no heartbeat for {self.settings.heartbeat_lost_after_s:g}s", final
                    ),
                )
                return
            if bot.max_duration_s and self._older_than(bot.active_at, bot.max_duration_s):
                self.fleet.stop_bot(
                    bot_id=bot_id, user_id=None, source=Source.SCHEDULER, reason="max_duration"
                )

        self._each(S.ACTIVE, fix)

    def reconcile_stopping(self) -> None:
        """A leaving bot gets the stop grace; then it is killed, and `completed` is recorded
        only once the engine confirms the workload is gone."""

        def fix(bot_id: str) -> None:
            bot = self._read(bot_id)
            if not bot.runtime_ref:
                if self._older_than(bot.stop_requested_at, self.settings.stop_grace_s):
                    self._repair(
                        bot_id,
                        S.STOPPING,
                        S.COMPLETED,
                        reason="cancelled",
                        detail="no workload was launched",
                    )
                return
            status = self.confirmed_status(bot)
            if status is not None and status.is_gone:
                code = status.exit_code
                target = S.COMPLETED if code in (0, None) else S.FAILED
                self._repair(
                    bot_id,
                    S.STOPPING,
                    target,
                    reason="exited",
                    exit_code=code,
                    detail=status.detail,
                )
                return
            if self._older_than(bot.stop_requested_at, self.settings.stop_grace_s):
                final = self._force_stop(bot)
                if final is not None and final.is_gone:
                    self._repair(
                        bot_id,
                        S.STOPPING,
                        S.COMPLETED,
                        reason="killed_after_grace",
                        exit_code=final.exit_code,
                        detail=_joined(
                            f"did not leave within {self.settings.stop_grace_s:g}s", final
                        ),
                    )

        self._each(S.STOPPING, fix)

    def _force_stop(self, bot: Bot) -> WorkloadStatus | None:
        if not bot.runtime_ref:
            return None
        try:
            return self.orchestrator.stop(bot.runtime_ref, grace_s=self.settings.kill_after_s)
        except OrchestratorError as exc:
            log.warning("could not stop bot %s: %s", bot.id, exc)
            return None

    # ---- workloads without a live record, and cleanup --------------------------------------

    @property
    def exit_grace_s(self) -> float:
        """How long the workload of an ended attempt may take to go on its own before it
        counts as an orphan: as long as a stopped bot may live, the stop grace plus the time
        SIGTERM may take. A runtime reports `exited` before its process or container has
        gone (a container takes a second or more under load), and the engine may still be
        carrying out a stop the manager ordered."""
        return self.settings.stop_grace_s + self.settings.kill_after_s

    def reconcile_workloads(self) -> None:
        """Stop orphans (botfleet workloads whose record is missing, or whose attempt ended
        longer ago than `exit_grace_s`), and remove ended workloads once their exit code is
        recorded."""
        workloads = self.fleet.workloads()
        ids = {w.bot_id for w in workloads}
        with self.fleet.sessions() as session:
            rows = session.execute(
                select(Bot.id, Bot.status, Bot.runtime_ref, Bot.attempt, Bot.ended_at).where(
                    Bot.id.in_(ids)
                )
            ).all()
            attempt_ends = {
                (row.bot_id, str(row.attempt)): row.ended_at
                for row in session.execute(
                    select(BotAttempt.bot_id, BotAttempt.attempt, BotAttempt.ended_at).where(
                        BotAttempt.bot_id.in_(ids)
                    )
                )
            }
        records = {row.id: row for row in rows}
        for workload in workloads:
            record = records.get(workload.bot_id)
            live = record is not None and BotStatus(record.status) not in TERMINAL
            if record is not None and live and record.runtime_ref == workload.runtime_ref:
                continue  # the current attempt: the per-state steps watch it
            try:
                attempt = workload.labels.get(LABEL_ATTEMPT)
                this_attempt = record is not None and attempt == str(record.attempt)
                if record is not None and live and record.runtime_ref is None and this_attempt:
                    # A launch in flight, or one whose ref was lost: adopt it if it runs, and
                    # otherwise leave it to `_retry_lost_launch`. Never an orphan.
                    self._adopt(workload)
                    continue
                if workload.status.is_gone:
                    self._record_end(workload, current=record is not None
                                     and record.runtime_ref == workload.runtime_ref)  # fmt: skip
                    self.orchestrator.remove(workload.runtime_ref)
                    continue
                # No record, an ended record, or an older attempt. An attempt that ended just
                # now is exiting on its own: its runtime reported `exited` and its process or
                # container takes a moment more to go, or the manager is stopping it.
                ended_at = attempt_ends.get((workload.bot_id, attempt or ""))
                if ended_at is None and record is not None and this_attempt and not live:
                    ended_at = record.ended_at  # ended without an attempt end (a cancel)
                if ended_at is not None and not self._older_than(ended_at, self.exit_grace_s):
                    log.debug("workload %s of bot %s ended %s: left to exit on its own",
                              workload.runtime_ref, workload.bot_id, ended_at)  # fmt: skip
                    continue
                log.warning("stopping orphan workload %s of bot %s",
                            workload.runtime_ref, workload.bot_id)  # fmt: skip
                self.orchestrator.stop(workload.runtime_ref, grace_s=self.settings.kill_after_s)
                metrics.RECONCILER_REPAIRS.labels("orphan_stopped").inc()
            except OrchestratorError as exc:
                log.warning("workload %s: %s", workload.runtime_ref, exc)

    def _adopt(self, workload: Workload) -> None:
        """A live bot's running workload whose ref was never saved (a crash right after the
        launch). One that never started is left to `_retry_lost_launch`."""
        if workload.status.state != WorkloadState.RUNNING:
            return
        with transaction(self.fleet.sessions) as session:
            bot = bot_records.lock_bot(session, workload.bot_id)
            same_attempt = workload.labels.get(LABEL_ATTEMPT) == str(bot.attempt)
            if bot.runtime_ref is None and same_attempt and BotStatus(bot.status) not in TERMINAL:
                bot.runtime_ref = workload.runtime_ref
                log.warning("bot %s: adopted workload %s", bot.id, workload.runtime_ref)

    def _record_end(self, workload: Workload, *, current: bool) -> None:
        """Keep the exit code and the last output lines before the engine forgets them."""
        logs = None
        if current and self.orchestrator.supports_logs:
            logs = self.orchestrator.logs(
                workload.runtime_ref, bot_id=workload.bot_id, tail=LAST_LOG_LINES
            )
        with transaction(self.fleet.sessions) as session:
            record_attempt_exit(session, workload.bot_id, runtime_ref=workload.runtime_ref,
                                exit_code=workload.status.exit_code)  # fmt: skip
            if not current:
                return
            bot = bot_records.lock_bot(session, workload.bot_id)
            if bot.exit_code is None and BotStatus(bot.status) in TERMINAL:
                bot.exit_code = workload.status.exit_code
            if logs is not None:
                bot.last_logs = logs

    # ---- commands ----------------------------------------------------------------------------

    def reconcile_commands(self) -> None:
        """Re-publish unacknowledged commands with backoff; expire the overdue and those of
        ended bots."""
        now = utcnow()
        with transaction(self.fleet.sessions) as session:
            open_commands = session.execute(
                select(Command, Bot.status)
                .join(Bot, Bot.id == Command.bot_id)
                .where(Command.status.in_(command_records.OPEN_STATUSES))
            ).all()
            due: list[Command] = []
            for command, bot_status in open_commands:
                if command.expires_at <= now or BotStatus(bot_status) in TERMINAL:
                    ended = BotStatus(bot_status) in TERMINAL
                    reason = "the bot ended first" if ended else "not acknowledged in time"
                    command_records.expire(session, command, reason=reason)
                elif command.next_publish_at is None or command.next_publish_at <= now:
                    due.append(command)
        for command in due:
            self.fleet.publish(command)

    def sweep_expired_records(self) -> None:
        """Idempotency answers are kept for 24 hours."""
        with transaction(self.fleet.sessions) as session:
            idempotency.sweep(session)

    def update_gauges(self) -> None:
        with self.fleet.sessions() as session:
            counts = {
                (status, backend): n
                for status, backend, n in session.execute(
                    select(Bot.status, Bot.orchestrator, func.count()).group_by(
                        Bot.status, Bot.orchestrator
                    )
                ).all()
            }
        backends = {backend for _, backend in counts} | {self.orchestrator.name}
        for status in BotStatus:
            for backend in backends:
                metrics.BOTS.labels(status.value, backend).set(
                    counts.get((status.value, backend), 0)
                )


def _exit_code(final: WorkloadStatus | None) -> int | None:
    """The exit code of a workload the reconciler stopped; None unless the engine knows it."""
    return final.exit_code if final is not None and final.is_gone else None


def _joined(detail: str, final: WorkloadStatus | None) -> str:
    return f"{detail}; {final.detail}" if final is not None and final.detail else detail

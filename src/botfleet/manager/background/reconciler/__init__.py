"""The reconciler: compares the database with the orchestrator's view and repairs the difference.

One short function per state, in its own module (`starting`, `active`, `stopping`), each
judging a bot's row and returning the repair it needs; `workloads` handles workloads without a
live record. A pass costs what the live bots cost, never the ended ones: one query reads every
live row (through the partial index `ix_bots_live`), one listing asks the engine about every
workload (`context.Listing`), and a bot is judged on that snapshot without a query of its own.
Only a bot that needs a repair is read again, judged again on the fresh row (logged when it
changed underneath), and repaired. Each bot and each workload is isolated from the others'
failures. It reaps only on positive proof of death (the engine says the workload exited, or a
listing confirms it is gone): an engine that cannot be asked changes nothing.

`Reconciler(...).run_once()` is one pass; it returns the errors it isolated (also kept in
`last_errors`), so tests can see them. Silence is judged only from heartbeats this replica could
have recorded: after it becomes leader (`on_lead`), after its database stops answering, while
its heartbeat writes fail (`heard`, the replica's heartbeat buffer) and while the bots' listener
turns connections away (`core.listener_health`), a bot's heartbeats count as lost only once a
full budget has passed (`context.Listening`).
`tick()` is the same pass for the manager's loop: it raises when a whole step failed (a bot
listing the database or the engine could not answer), so /readyz shows a reconciler that cannot
work, but not one bot's error. Housekeeping (commands, sweeps, gauges, retention) is a loop of
its own: `manager/background/housekeeping.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, cast

from sqlalchemy import Row, select, text
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.background.loops import StepsFailed, database_unreachable, describe
from botfleet.manager.background.reconciler.active import reconcile_active
from botfleet.manager.background.reconciler.context import Context, Listing, Repair, log
from botfleet.manager.background.reconciler.starting import reconcile_requested, reconcile_starting
from botfleet.manager.background.reconciler.stopping import reconcile_stopping
from botfleet.manager.background.reconciler.workloads import exit_grace_s, reconcile_workloads
from botfleet.manager.core import metrics
from botfleet.manager.core.clock import database_now
from botfleet.manager.core.models import LIVE_SQL, Bot
from botfleet.manager.core.settings import Settings
from botfleet.manager.hot_path.heartbeat_batches import HeartbeatBuffer
from botfleet.manager.lifecycle import BotStatus, IllegalTransition
from botfleet.manager.services.attempts import PendingExit, pending_exits
from botfleet.manager.services.bot_requests import BotRequests
from botfleet.manager.services.launcher import Launcher

S = BotStatus
PerState = Callable[[Context, Bot], Repair | None]

#: What the per-state functions judge a bot by: a pass reads only these columns of the live
#: rows (a bot that needs a repair is read again whole). Reading another column of the
#: snapshot raises (the row is detached), so a judge that needs more cannot go unnoticed.
#: Bots judged between two chances for the API's event loop to run (see `_reconcile`).
YIELD_EVERY = 200

SNAPSHOT = (
    Bot.id,
    Bot.status,
    Bot.status_reason,  # a bot stopped for silence ends `heartbeat_lost` (rules.kept_silent)
    Bot.attempt,
    Bot.runtime_ref,
    Bot.start_at,
    Bot.started_at,
    Bot.active_at,
    Bot.next_attempt_at,
    Bot.last_heartbeat_at,
    Bot.stop_requested_at,
    Bot.max_duration_s,
)

#: Which function looks after a bot in each live status, in the order a pass visits them.
PER_STATE: dict[BotStatus, PerState] = {
    S.REQUESTED: reconcile_requested,
    S.STARTING: reconcile_starting,
    S.ACTIVE: reconcile_active,
    S.STOPPING: reconcile_stopping,
}


class Reconciler:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        settings: Settings,
        launcher: Launcher,
        bots: BotRequests,
        heard: HeartbeatBuffer | None = None,
    ) -> None:
        self.ctx = Context(
            sessions=sessions, settings=settings, launcher=launcher, bots=bots, heard=heard
        )
        self.last_errors: list[str] = []
        self.failed_steps: list[str] = []

    def run_once(self) -> list[str]:
        """One full pass: every live bot by status, then every workload, from one read of the
        live rows and one listing. Never raises; returns the errors it isolated, as
        `where: error` lines."""
        self.failed_steps = []
        errors: list[str] = []
        exits: dict[str, PendingExit] = {}
        try:
            live, exits = self._live_bots()
        except Exception as exc:
            live = None
            errors.append(self._step_failed("read_live_bots", exc))
        listing = Listing.of(self.ctx.launcher)  # after the rows: Listing
        ctx = replace(self.ctx, listing=listing, exits=exits)
        if live is not None:
            for status in PER_STATE:
                seen = [bot for bot in live if bot.status == status]
                errors += self._reconcile(ctx, status, seen)
        errors += self._reconcile_workloads(ctx)
        self.last_errors = errors
        return errors

    def tick(self) -> None:
        """One pass for the manager's loop: raises `StepsFailed` when a whole step failed."""
        self.run_once()
        if self.failed_steps:
            raise StepsFailed("; ".join(self.failed_steps))

    def reconcile(self, status: BotStatus) -> list[str]:
        """Every bot in `status` (one step of a pass, for tests); returns the errors of those
        that raised."""
        try:
            live, exits = self._live_bots(status)
        except Exception as exc:
            return [self._step_failed(f"reconcile_{status.value}", exc)]
        listing = Listing.of(self.ctx.launcher)
        return self._reconcile(replace(self.ctx, listing=listing, exits=exits), status, live)

    def reconcile_workloads(self) -> list[str]:
        """Orphans, lost launches' workloads and ended workloads; returns the errors."""
        return self._reconcile_workloads(self.ctx)

    def visit(self, ctx: Context, status: BotStatus, seen: Bot) -> None:
        """Judge the bot on the pass's snapshot; only if it needs a repair, read it again and
        repair what the fresh row still needs (a callback may have moved it meanwhile)."""
        judge = PER_STATE[status]
        if judge(ctx, seen) is None:
            return  # the common case: no query, no transaction
        bot = ctx.reread(seen.id, status)
        if bot is None:
            return
        repair = judge(ctx, bot)
        if repair is not None:
            repair()

    def _live_bots(
        self, status: BotStatus | None = None
    ) -> tuple[Sequence[Bot], dict[str, PendingExit]]:
        """Every live bot (or those in `status`) in one query, through `ix_bots_live` (its
        predicate, word for word), `SNAPSHOT`'s columns only, and the few whose runtime
        reported `exited` while their workload may run (`attempts.pending_exits`); observes
        the database's clock and whether this replica's heartbeats are being stored
        (`context.Listening`)."""
        query = select(*SNAPSHOT).where(text(LIVE_SQL))
        if status is not None:
            query = query.where(Bot.status == status)
        with self.ctx.sessions() as session:
            now = database_now(session)
            self.ctx.listening.observe(now, hearing=self.ctx.hearing())
            # Plain rows, read like a Bot through SNAPSHOT's names: building ORM objects for
            # 10,000 live bots took 200-300 ms of the manager's CPU per tick; rows take ~50 ms,
            # read a slice at a time with the API's event loop let in between.
            rows: list[Row[Any]] = []  # extended with rows of SNAPSHOT's columns
            for part in session.execute(
                query.execution_options(yield_per=YIELD_EVERY)
            ).partitions():
                rows.extend(cast(Sequence[Row[Any]], part))
                time.sleep(0)
            return cast(Sequence[Bot], rows), pending_exits(session)

    def _reconcile(self, ctx: Context, status: BotStatus, bots: Sequence[Bot]) -> list[str]:
        step, errors = f"reconcile_{status.value}", []
        for n, bot in enumerate(bots, 1):
            if n % YIELD_EVERY == 0:
                time.sleep(0)  # let the API's event loop have the interpreter between slices
            try:
                self.visit(ctx, status, bot)
            except IllegalTransition as exc:
                log.info("bot %s changed underneath the reconciler: %s", bot.id, exc)
            except Exception as exc:
                errors.append(self._failed(step, bot.id, exc))
        return errors

    def _reconcile_workloads(self, ctx: Context) -> list[str]:
        step, errors = "reconcile_workloads", []

        def on_error(where: str, exc: Exception) -> None:
            errors.append(self._failed(step, where, exc))

        try:
            reconcile_workloads(ctx, on_error)
        except Exception as exc:
            errors.append(self._step_failed(step, exc))
        return errors

    def on_lead(self) -> None:
        """This replica just became leader (or got its lease back after the database was
        unreachable): heartbeats may have gone unrecorded meanwhile, so silence is judged again
        only after a full budget (`context.Listening`). Called by the loop (`on_lead`)."""
        self.ctx.listening.lost()

    @property
    def exit_grace_s(self) -> float:
        """See `workloads.exit_grace_s`."""
        return exit_grace_s(self.ctx.settings)

    def _step_failed(self, step: str, exc: Exception) -> str:
        """The whole step failed (no bot was looked at): the loop must hear of it."""
        line = self._failed(step, step, exc)
        self.failed_steps.append(f"{step}: {describe(exc)}")
        return line

    def _failed(self, step: str, where: str, exc: Exception) -> str:
        if database_unreachable(exc):
            self.ctx.listening.lost()  # heartbeats could not be recorded either
        metrics.RECONCILER_ERRORS.labels(step).inc()
        log.exception("reconciler %s failed at %s", step, where)
        return f"{where}: {exc}"


__all__ = ["PER_STATE", "SNAPSHOT", "Context", "Reconciler", "exit_grace_s"]

"""The reconciler: compares the database with the orchestrator's view and repairs the difference.

One short function per state, in its own module (`starting`, `active`, `stopping`), each
re-reading the bot before acting and logging when it changed underneath; `workloads` handles
workloads without a live record. Each bot and each workload is isolated from the others'
failures. It reaps only on positive proof of death (the engine says the workload exited, or a
listing confirms it is gone): an engine that cannot be asked changes nothing.

`Reconciler(fleet).run_once()` is one pass; it returns the errors it isolated (also kept in
`last_errors`), so tests can see them. Silence is judged only from heartbeats this replica could
have recorded: after it becomes leader (`on_lead`) and after its database stops answering, a
bot's heartbeats count as lost only once a full budget has passed (`context.Listening`).
`tick()` is the same pass for the manager's loop: it raises when a whole step failed (a bot
listing the database or the engine could not answer), so /readyz shows a reconciler that cannot
work, but not one bot's error. Housekeeping (commands, sweeps, gauges, retention) is a loop of
its own: `manager/housekeeping.py`.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from manager import metrics
from manager.clock import database_now
from manager.lifecycle import BotStatus, IllegalTransition
from manager.loops import StepsFailed, database_unreachable, describe
from manager.models import Bot
from manager.reconciler.active import reconcile_active
from manager.reconciler.context import Context, log
from manager.reconciler.starting import reconcile_requested, reconcile_starting
from manager.reconciler.stopping import reconcile_stopping
from manager.reconciler.workloads import exit_grace_s, reconcile_workloads
from manager.services.fleet import Fleet

S = BotStatus
PerState = Callable[[Context, str], None]

#: Which function looks after a bot in each live status, in the order a pass visits them.
PER_STATE: dict[BotStatus, PerState] = {
    S.REQUESTED: reconcile_requested,
    S.STARTING: reconcile_starting,
    S.ACTIVE: reconcile_active,
    S.STOPPING: reconcile_stopping,
}


class Reconciler:
    def __init__(self, fleet: Fleet) -> None:
        self.ctx = Context(fleet)
        self.last_errors: list[str] = []
        self.failed_steps: list[str] = []

    def run_once(self) -> list[str]:
        """One full pass: every live bot by status, then every workload. Never raises; returns
        the errors it isolated, as `where: error` lines."""
        self.failed_steps = []
        errors: list[str] = []
        for status in PER_STATE:
            errors += self.reconcile(status)
        errors += self.reconcile_workloads()
        self.last_errors = errors
        return errors

    def tick(self) -> None:
        """One pass for the manager's loop: raises `StepsFailed` when a whole step failed."""
        self.run_once()
        if self.failed_steps:
            raise StepsFailed("; ".join(self.failed_steps))

    def reconcile(self, status: BotStatus) -> list[str]:
        """Every bot in `status`, one at a time; returns the errors of those that raised."""
        step, errors = f"reconcile_{status.value}", []
        try:
            with self.ctx.fleet.sessions() as session:
                self.ctx.listening.observe(database_now(session))
                ids = list(session.scalars(select(Bot.id).where(Bot.status == status)))
        except Exception as exc:
            return [self._step_failed(step, exc)]
        for bot_id in ids:
            try:
                PER_STATE[status](self.ctx, bot_id)
            except IllegalTransition as exc:
                log.info("bot %s changed underneath the reconciler: %s", bot_id, exc)
            except Exception as exc:
                errors.append(self._failed(step, bot_id, exc))
        return errors

    def reconcile_workloads(self) -> list[str]:
        """Orphans, lost launches' workloads and ended workloads; returns the errors."""
        step, errors = "reconcile_workloads", []

        def on_error(where: str, exc: Exception) -> None:
            errors.append(self._failed(step, where, exc))

        try:
            reconcile_workloads(self.ctx, on_error)
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


__all__ = ["PER_STATE", "Reconciler", "exit_grace_s"]

"""Workloads without a live record: orphans are stopped, a lost launch's workload adopted, and
ended workloads removed once their exit code (and last log lines) are recorded."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select

from botfleet.manager.background.reconciler.context import Context, exit_grace_s, log, older_than
from botfleet.manager.core import metrics
from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import Bot, BotAttempt
from botfleet.manager.core.settings import Settings
from botfleet.manager.lifecycle import TERMINAL
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services.attempts import record_attempt_exit
from botfleet.orchestrators.base import LABEL_ATTEMPT, OrchestratorError, Workload, WorkloadState
from botfleet.orchestrators.log_tail import LogLimits, tail_text

LAST_LOG_LINES = 200  # kept on the bot when its workload is removed

__all__ = ["LAST_LOG_LINES", "exit_grace_s", "kept_lines", "reconcile_workloads"]


def reconcile_workloads(ctx: Context, on_error: Callable[[str, Exception], None]) -> None:
    """One look at every workload of this fleet (the tick's listing, when the pass took one);
    each is isolated from the others' failures (`on_error` hears of the unexpected ones; an
    engine error is only logged). Raises when the engine could not be listed."""
    if ctx.listing is None:
        workloads = ctx.launcher.workloads()
    elif ctx.listing.error is not None:
        raise ctx.listing.error
    else:
        workloads = ctx.listing.workloads
    records, attempt_ends = _records_of(ctx, {w.bot_id for w in workloads})
    for workload in workloads:
        try:
            _reconcile_workload(ctx, workload, records.get(workload.bot_id), attempt_ends)
        except OrchestratorError as exc:
            log.warning("workload %s: %s", workload.runtime_ref, exc)
        except Exception as exc:
            on_error(workload.runtime_ref, exc)


def _records_of(
    ctx: Context, ids: set[str]
) -> tuple[dict[str, Any], dict[tuple[str, str], datetime | None]]:
    """The bots these workloads belong to, and when each of their attempts ended."""
    if not ids:
        return {}, {}
    with ctx.sessions() as session:
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
    return {row.id: row for row in rows}, attempt_ends


def _reconcile_workload(
    ctx: Context,
    workload: Workload,
    record: Any,
    attempt_ends: dict[tuple[str, str], datetime | None],
) -> None:
    live = record is not None and record.status not in TERMINAL
    current = record is not None and record.runtime_ref == workload.runtime_ref
    if live and current:
        return  # the current attempt: the per-state functions watch it
    attempt = workload.labels.get(LABEL_ATTEMPT)
    this_attempt = record is not None and attempt == str(record.attempt)
    if live and record.runtime_ref is None and this_attempt:
        # A launch in flight, or one whose ref was lost: adopt it if it runs, and otherwise
        # leave it to `retry_lost_launch`. Never an orphan.
        _adopt(ctx, workload)
        return
    if workload.status.is_gone:
        _record_end(ctx, workload, current=current)
        ctx.orchestrator.remove(workload.runtime_ref)
        return
    # No record, an ended record, or an older attempt. An attempt that ended just now may be
    # exiting still: one ended without its workload confirmed gone (a start timeout, a restart
    # for silence, a cancel) while the engine carries out the stop the manager ordered. (An
    # `exited` report ends its attempt only once the workload is gone: `Context.after_report`.)
    ended_at = attempt_ends.get((workload.bot_id, attempt or ""))
    if ended_at is None and this_attempt and not live:
        ended_at = record.ended_at  # ended without an attempt end (a cancel)
    if ended_at is not None and not older_than(ended_at, exit_grace_s(ctx.settings)):
        log.debug("workload %s of bot %s ended %s: left to exit on its own",
                  workload.runtime_ref, workload.bot_id, ended_at)  # fmt: skip
        return
    log.warning("stopping orphan workload %s of bot %s", workload.runtime_ref, workload.bot_id)
    ctx.orchestrator.stop(workload.runtime_ref, grace_s=ctx.settings.kill_after_s)
    metrics.RECONCILER_REPAIRS.labels("orphan_stopped").inc()


def _adopt(ctx: Context, workload: Workload) -> None:
    """A live bot's running workload whose ref was never saved (a crash right after the
    launch). One that never started is left to `retry_lost_launch`."""
    if workload.status.state != WorkloadState.RUNNING:
        return
    with transaction(ctx.sessions) as session:
        bot = bot_records.lock_bot(session, workload.bot_id)
        same_attempt = workload.labels.get(LABEL_ATTEMPT) == str(bot.attempt)
        if bot.runtime_ref is None and same_attempt and bot.status not in TERMINAL:
            bot.runtime_ref = workload.runtime_ref
            log.warning("bot %s: adopted workload %s", bot.id, workload.runtime_ref)


def kept_lines(text: str, settings: Settings) -> str:
    """`last_logs` is capped like any answer of GET /bots/{id}/logs, whatever the backend sent."""
    limits = LogLimits(settings.log_tail_max_bytes, settings.log_line_max_bytes)
    return tail_text(text, tail=LAST_LOG_LINES, limits=limits)


def _record_end(ctx: Context, workload: Workload, *, current: bool) -> None:
    """Keep the exit code and the last output lines before the engine forgets them."""
    logs = None
    if current and ctx.orchestrator.supports_logs:
        try:
            text = ctx.orchestrator.logs(
                workload.runtime_ref, bot_id=workload.bot_id, tail=LAST_LOG_LINES
            )
        except OrchestratorError as exc:
            # No logs (Nomad: a task that never started) must not block recording the end and
            # removing the workload and its secrets.
            log.info("workload %s: no last logs: %s", workload.runtime_ref, exc)
            text = None
        logs = None if text is None else kept_lines(text, ctx.settings)
    with transaction(ctx.sessions) as session:
        record_attempt_exit(session, workload.bot_id, runtime_ref=workload.runtime_ref,
                            exit_code=workload.status.exit_code)  # fmt: skip
        if not current:
            return
        bot = bot_records.lock_bot(session, workload.bot_id)
        if bot.exit_code is None and bot.status in TERMINAL:
            bot.exit_code = workload.status.exit_code
        if logs is not None:
            bot.last_logs = logs

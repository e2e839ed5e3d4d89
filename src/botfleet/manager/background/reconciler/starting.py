"""Bots on their way up: `requested` ones whose launch is due, and `starting` ones that may
have timed out, died before `started`, lost their launch, or wait for a restart's backoff."""

from __future__ import annotations

from functools import partial

from botfleet.manager.background.reconciler.context import Context, Repair, log, older_than
from botfleet.manager.core import metrics
from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import Bot, utcnow
from botfleet.manager.lifecycle import BotStatus
from botfleet.manager.lifecycle.rules import Overdue, on_workload_gone
from botfleet.manager.services import bots as bot_records
from botfleet.orchestrators.base import LABEL_BOT_ID, WorkloadState

S = BotStatus


def reconcile_requested(ctx: Context, bot: Bot) -> Repair | None:
    """Launch a requested bot whose time has come (the POST's launch may have been lost in a
    crash); `Launcher.launch` gives up on a scheduled start missed by too much. Like every
    per-state function it only judges the row it is given (see `active`)."""
    if bot.start_at is None or bot.start_at <= utcnow():
        return partial(ctx.launcher.launch, bot.id)
    return None


def reconcile_starting(ctx: Context, bot: Bot) -> Repair | None:
    if bot.next_attempt_at is not None:  # a restart waiting for its backoff
        if bot.next_attempt_at <= utcnow():
            return partial(ctx.launcher.relaunch, bot.id)
        return None
    pending = ctx.reported(bot)
    if pending is not None:  # it reported `exited`: it ends once none of its processes remain
        return ctx.after_report(bot, pending)
    timeout_s = ctx.settings.start_timeout_s
    if older_than(bot.started_at, timeout_s):
        return partial(ctx.kill_overdue, bot, Overdue.START, timeout_s)
    if bot.runtime_ref is None:
        if older_than(bot.started_at, ctx.settings.launch_timeout_s):
            return partial(retry_lost_launch, ctx, bot)
        return None
    final = ctx.gone(bot)
    if final is not None:
        outcome = on_workload_gone(bot, final.exit_code, final.detail, final.reason)
        return partial(ctx.end_if_still, bot.id, S.STARTING, outcome, bot.attempt)
    return None


def retry_lost_launch(ctx: Context, bot: Bot) -> None:
    """`starting` with no workload long after the launch began: the manager died between
    recording the launch and reaching the engine. Launch again once a listing confirms that
    nothing runs for this bot (a workload found instead is adopted by the workload pass)."""
    listed = ctx.launcher.workloads(**{LABEL_BOT_ID: bot.id})
    if any(w.status.state == WorkloadState.RUNNING for w in listed):
        return
    for leftover in listed:  # e.g. a container created but never started
        ctx.orchestrator.stop(leftover.runtime_ref, grace_s=ctx.settings.kill_after_s)
    with transaction(ctx.sessions) as session:
        locked = bot_records.lock_bot(session, bot.id)
        if locked.status != S.STARTING or locked.runtime_ref or locked.next_attempt_at:
            return
        locked.next_attempt_at = utcnow()
    log.warning("bot %s: its launch was lost; launching again", bot.id)
    metrics.RECONCILER_REPAIRS.labels("launch_retried").inc()
    ctx.launcher.relaunch(bot.id)

"""Leaving bots: each gets the stop grace; then it is killed, and `completed` is recorded only
once the engine confirms the workload is gone."""

from __future__ import annotations

from functools import partial

from botfleet.manager.background.reconciler.context import Context, Repair, older_than
from botfleet.manager.core.models import Bot
from botfleet.manager.lifecycle import BotStatus
from botfleet.manager.lifecycle.rules import Overdue, on_stop_without_workload, on_workload_gone

S = BotStatus


def reconcile_stopping(ctx: Context, bot: Bot) -> Repair | None:
    """The repair a stopping bot needs (None: none); it only judges (see `active`)."""
    grace_s = ctx.settings.stop_grace_s
    if not bot.runtime_ref:
        if older_than(bot.stop_requested_at, grace_s):
            return partial(ctx.end_if_still, bot.id, S.STOPPING, on_stop_without_workload())
        return None
    pending = ctx.reported(bot)
    if pending is not None:  # it reported `exited`: it ends once none of its processes remain
        return ctx.after_report(bot, pending)
    final = ctx.gone(bot)
    if final is not None:
        outcome = on_workload_gone(bot, final.exit_code, final.detail, final.reason)
        return partial(ctx.end_if_still, bot.id, S.STOPPING, outcome)
    if older_than(bot.stop_requested_at, grace_s):
        return partial(ctx.kill_overdue, bot, Overdue.LEAVE, grace_s)
    return None

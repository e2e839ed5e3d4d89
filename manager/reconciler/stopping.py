"""Leaving bots: each gets the stop grace; then it is killed, and `completed` is recorded only
once the engine confirms the workload is gone."""

from __future__ import annotations

from manager.lifecycle import BotStatus
from manager.lifecycle.rules import Overdue, on_stop_without_workload, on_workload_gone
from manager.reconciler.context import Context, older_than

S = BotStatus


def reconcile_stopping(ctx: Context, bot_id: str) -> None:
    bot = ctx.reread(bot_id, S.STOPPING)
    if bot is None:
        return
    grace_s = ctx.settings.stop_grace_s
    if not bot.runtime_ref:
        if older_than(bot.stop_requested_at, grace_s):
            ctx.end_if_still(bot_id, S.STOPPING, on_stop_without_workload())
        return
    final = ctx.gone(bot)
    if final is not None:
        ctx.end_if_still(bot_id, S.STOPPING, on_workload_gone(bot, final.exit_code, final.detail))
        return
    if older_than(bot.stop_requested_at, grace_s):
        ctx.kill_overdue(bot, Overdue.LEAVE, grace_s)

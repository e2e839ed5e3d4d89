"""Running bots: a workload that vanished, a bot gone silent, one past its `max_duration_s`.

Silence is judged on the database's clock and only from when this replica could hear
heartbeats (`context.Listening`): an outage of the manager never fails a bot."""

from __future__ import annotations

from manager.lifecycle import BotStatus, Source
from manager.lifecycle.rules import Overdue, heartbeat_lost, on_workload_gone
from manager.reconciler.context import Context, older_than

S = BotStatus


def reconcile_active(ctx: Context, bot_id: str) -> None:
    bot = ctx.reread(bot_id, S.ACTIVE)
    if bot is None:
        return
    final = ctx.gone(bot)
    if final is not None:
        ctx.end_if_still(bot_id, S.ACTIVE, on_workload_gone(bot, final.exit_code, final.detail))
        return
    lost_after_s = ctx.settings.heartbeat_lost_after_s
    listening = ctx.listening
    if heartbeat_lost(bot.last_heartbeat_at, listening_since=listening.since,
                      now=listening.now, budget_s=lost_after_s):  # fmt: skip
        ctx.kill_overdue(bot, Overdue.HEARTBEAT, lost_after_s)
        return
    if bot.max_duration_s and older_than(bot.active_at, bot.max_duration_s):
        ctx.fleet.stop_bot(
            bot_id=bot_id, user_id=None, source=Source.SCHEDULER, reason="max_duration"
        )

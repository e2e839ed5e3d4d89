"""Running bots: a workload that vanished, a bot gone silent, one past its `max_duration_s`.

Silence is judged on the database's clock and only from when this replica could hear
heartbeats (`context.Listening`): an outage of the manager never fails a bot. A heartbeat this
replica heard but could not write yet counts as heard, and while its writes fail nobody is
judged silent (`Context.silent`). A silent bot is recorded `stopping` before its workload is
signalled (`Context.stop_for_silence`).

Like every per-state function, `reconcile_active` only judges the row it is given and returns
the repair (None: nothing to do), so a pass judges its snapshot without a query per bot, and
judges a bot again on its re-read row before repairing it (`Reconciler.visit`)."""

from __future__ import annotations

from functools import partial

from botfleet.manager.background.reconciler.context import Context, Repair, older_than
from botfleet.manager.core.models import Bot
from botfleet.manager.lifecycle import BotStatus, Source
from botfleet.manager.lifecycle.rules import on_workload_gone

S = BotStatus


def reconcile_active(ctx: Context, bot: Bot) -> Repair | None:
    pending = ctx.reported(bot)
    if pending is not None:  # it reported `exited`: it ends once none of its processes remain
        return ctx.after_report(bot, pending)
    final = ctx.gone(bot)
    if final is not None:
        outcome = on_workload_gone(bot, final.exit_code, final.detail, final.reason)
        return partial(ctx.end_if_still, bot.id, S.ACTIVE, outcome)
    if ctx.silent(bot):
        return partial(ctx.stop_for_silence, bot)
    if bot.max_duration_s and older_than(bot.active_at, bot.max_duration_s):
        return partial(
            ctx.bots.stop_bot,
            bot_id=bot.id,
            user_id=None,
            source=Source.SCHEDULER,
            reason="max_duration",
        )
    return None

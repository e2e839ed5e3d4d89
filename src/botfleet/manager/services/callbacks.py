"""What the runtime's callbacks do to a bot: load, ask `botfleet.manager.lifecycle`, store."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from botfleet.manager.core.clock import database_now
from botfleet.manager.core.errors import ErrorCode, Invalid
from botfleet.manager.core.models import Bot
from botfleet.manager.lifecycle import LIVE, Source
from botfleet.manager.lifecycle.rules import ExitReport, on_exit, on_report
from botfleet.manager.schemas.api import CallbackIn
from botfleet.manager.services.attempts import end_attempt, store_exit_report
from botfleet.manager.services.transitions import transition


@dataclass(frozen=True)
class AwaitedExit:
    """A bot whose runtime reported `exited` while its workload may still run: it ends once
    the engine confirms the workload is gone (manager/background/exit_watch.py)."""

    bot_id: str
    attempt: int
    runtime_ref: str


def apply_callback(session: Session, bot: Bot, event: CallbackIn) -> bool:
    """Apply one callback to a locked bot; return whether its status changed.

    Repeats of an event the bot already reflects are accepted without change
    (`rules.on_report`); anything the table forbids raises IllegalTransition and changes
    nothing. An `exited` from a bot with a workload is judged (`rules.on_exit` refuses what
    the table forbids) and kept on its attempt: the bot's record changes only once none of its
    processes remain (`awaited_exit`); without a workload to wait for, it ends at once.
    """
    if event.event == "heartbeat":
        if bot.status in LIVE:  # the database's clock: the leader judges it with the same one
            bot.last_heartbeat_at = database_now(session)
        return False
    if event.event == "exited":
        if event.exit_code is None:
            raise Invalid(ErrorCode.EXIT_CODE_REQUIRED, "an `exited` callback needs `exit_code`")
        report = ExitReport(event.exit_code, event.reason, event.detail or "")
        outcome = on_exit(bot, report.exit_code, report.reason, report.detail)
        if bot.runtime_ref is None:
            end_attempt(session, bot, outcome, source=Source.RUNTIME)
            return True
        store_exit_report(session, bot, report)
        return False
    move = on_report(bot, event.event, event.reason)
    if move is None:
        return False
    transition(session, bot, move.target, reason=move.reason, source=Source.RUNTIME,
               detail=event.detail or "")  # fmt: skip
    return True


def awaited_exit(bot: Bot, event: CallbackIn) -> AwaitedExit | None:
    """After `apply_callback`: the exit to watch for, when `event` was an `exited` kept until
    the bot's workload is gone."""
    if event.event != "exited" or bot.status not in LIVE or bot.runtime_ref is None:
        return None
    return AwaitedExit(bot.id, bot.attempt, bot.runtime_ref)

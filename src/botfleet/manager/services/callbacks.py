"""What the runtime's callbacks do to a bot: load, ask `botfleet.manager.lifecycle`, store."""

from __future__ import annotations

from sqlalchemy.orm import Session

from botfleet.manager.core.clock import database_now
from botfleet.manager.core.errors import ErrorCode, Invalid
from botfleet.manager.core.models import Bot
from botfleet.manager.lifecycle import LIVE, Source
from botfleet.manager.lifecycle.rules import on_exit, on_report
from botfleet.manager.schemas.api import CallbackIn
from botfleet.manager.services.attempts import end_attempt
from botfleet.manager.services.transitions import transition


def apply_callback(session: Session, bot: Bot, event: CallbackIn) -> bool:
    """Apply one callback to a locked bot; return whether its status changed.

    Repeats of an event the bot already reflects are accepted without change
    (`rules.on_report`); anything the table forbids raises IllegalTransition and changes
    nothing.
    """
    if event.event == "heartbeat":
        if bot.status in LIVE:  # the database's clock: the leader judges it with the same one
            bot.last_heartbeat_at = database_now(session)
        return False
    if event.event == "exited":
        if event.exit_code is None:
            raise Invalid(ErrorCode.EXIT_CODE_REQUIRED, "an `exited` callback needs `exit_code`")
        outcome = on_exit(bot, event.exit_code, event.reason, event.detail or "")
        end_attempt(session, bot, outcome, source=Source.RUNTIME)
        return True
    move = on_report(bot, event.event, event.reason)
    if move is None:
        return False
    transition(session, bot, move.target, reason=move.reason, source=Source.RUNTIME,
               detail=event.detail or "")  # fmt: skip
    return True

"""What the runtime's callbacks do to a bot. The transition table decides what is legal."""

from __future__ import annotations

from sqlalchemy.orm import Session

from manager.errors import Invalid
from manager.lifecycle import LIVE, BotStatus, IllegalTransition, Source, transition
from manager.models import Bot, utcnow
from manager.schemas import CallbackIn
from manager.services.attempts import end_attempt

S = BotStatus


def apply_callback(session: Session, bot: Bot, event: CallbackIn) -> bool:
    """Apply one callback to a locked bot; return whether its status changed.

    Repeats of an event the bot already reflects (a retried `started`, `leaving` while
    stopping) are accepted without change, so the runtime's retries are harmless; anything the
    table forbids raises IllegalTransition and changes nothing.
    """
    status = BotStatus(bot.status)
    detail = event.detail or ""
    if event.event == "heartbeat":
        if status in LIVE:
            bot.last_heartbeat_at = utcnow()
        return False
    if event.event == "started":
        if status == S.ACTIVE:
            return False
        transition(
            session,
            bot,
            S.ACTIVE,
            reason=event.reason or "started",
            source=Source.RUNTIME,
            detail=detail,
        )
        return True
    if event.event == "leaving":
        if status == S.STOPPING:
            return False
        transition(
            session,
            bot,
            S.STOPPING,
            reason=event.reason or "bot_leaving",
            source=Source.RUNTIME,
            detail=detail,
        )
        return True
    return _exited(session, bot, event)


def _exited(session: Session, bot: Bot, event: CallbackIn) -> bool:
    if event.exit_code is None:
        raise Invalid("exit_code_required", "an `exited` callback needs `exit_code`")
    status, code = BotStatus(bot.status), event.exit_code
    if status == S.STARTING:
        failed, default_reason = True, "exited_before_started"
    elif code == 0:
        failed, default_reason = False, ("left" if status == S.STOPPING else "finished")
    else:
        failed, default_reason = True, "crashed"
    reason = event.reason or default_reason
    if not failed and reason in ("crashed", "start_failed"):
        reason = default_reason  # a zero exit is never reported as a crash
    if status not in (S.STARTING, S.ACTIVE, S.STOPPING):
        raise IllegalTransition(bot.id, bot.status, S.FAILED if failed else S.COMPLETED)
    end_attempt(session, bot, failed=failed, reason=reason, source=Source.RUNTIME,
                detail=event.detail or "", exit_code=code)  # fmt: skip
    return True

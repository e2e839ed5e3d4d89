"""The bot lifecycle: one transition table, and the only function that changes a bot's status.

Every rule about which status may follow which lives in `TRANSITIONS` (CONTRACT.md). Callers never
compare statuses themselves to decide whether a move is allowed; they call `transition()`, which
refuses illegal moves without changing anything and stores every legal one as a row.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy.orm import Session

from manager import metrics
from manager.events import record_event
from manager.models import Bot, BotTransition, utcnow


class BotStatus(enum.StrEnum):
    REQUESTED = "requested"
    STARTING = "starting"
    ACTIVE = "active"
    STOPPING = "stopping"
    COMPLETED = "completed"
    FAILED = "failed"


class Source(enum.StrEnum):
    """Who caused a transition."""

    API = "api"
    RUNTIME = "runtime"
    ORCHESTRATOR = "orchestrator"
    RECONCILER = "reconciler"
    SCHEDULER = "scheduler"


TERMINAL: frozenset[BotStatus] = frozenset({BotStatus.COMPLETED, BotStatus.FAILED})
LIVE: frozenset[BotStatus] = frozenset(BotStatus) - TERMINAL

S = BotStatus
#: (from, to) → the typical cause. Anything not listed is illegal.
TRANSITIONS: dict[tuple[BotStatus, BotStatus], str] = {
    (S.REQUESTED, S.STARTING): "the orchestrator launch began",
    (S.REQUESTED, S.COMPLETED): "stopped before launch",
    (S.REQUESTED, S.FAILED): "launch impossible",
    (S.STARTING, S.ACTIVE): "the runtime reported started",
    (S.STARTING, S.STOPPING): "stop requested while starting",
    (S.STARTING, S.FAILED): "launch error, start timeout, exit before started",
    (S.ACTIVE, S.STOPPING): "stop requested, or the bot is leaving",
    (S.ACTIVE, S.COMPLETED): "the bot exited 0 on its own",
    (S.ACTIVE, S.FAILED): "non-zero exit, crash, heartbeat lost, workload vanished",
    (S.ACTIVE, S.STARTING): "restart policy relaunches after a failure",
    (S.STOPPING, S.COMPLETED): "exited after leave, or killed after the stop grace",
    (S.STOPPING, S.FAILED): "exited non-zero while leaving",
}


class IllegalTransition(Exception):
    """A move the table does not allow; nothing was changed.

    `target` is a status, or an action that needs a live bot (`reconfigure`). The message says
    why in words: the bot has ended, is leaving, or has not started yet.
    """

    def __init__(self, bot_id: str, current: str, target: str) -> None:
        super().__init__(_refusal(bot_id, current, target))
        self.bot_id, self.current, self.target = bot_id, current, target


#: What a refused action would have done to the bot, for messages.
_PASSIVE = {"reconfigure": "be reconfigured"}


def _refusal(bot_id: str, current: str, target: str) -> str:
    is_status = target in {s.value for s in BotStatus}
    done = (
        "become " + target if is_status else _PASSIVE.get(target, f"receive the {target} command")
    )
    if current in TERMINAL:
        return f"bot {bot_id} has ended ({current}); it can no longer {done}"
    if is_status:
        return f"bot {bot_id} cannot go from {current} to {target}"
    if current == S.STOPPING:
        return f"bot {bot_id} is stopping; it can no longer {done}"
    if current == S.REQUESTED:
        return (
            f"bot {bot_id} has not been launched yet (requested); it can {done} once it is "
            "starting or active"
        )
    return f"bot {bot_id} is {current}; it can {done} only while starting or active"


def is_allowed(current: str, target: str) -> bool:
    return (BotStatus(current), BotStatus(target)) in TRANSITIONS


def transition(
    session: Session,
    bot: Bot,
    target: BotStatus,
    *,
    reason: str,
    source: Source,
    detail: str = "",
    exit_code: int | None = None,
    at: datetime | None = None,
) -> BotTransition:
    """Move `bot` to `target` and store the transition; raise IllegalTransition otherwise.

    The caller must hold the bot's row lock (`services.bots.lock_bot`) so that concurrent updates
    are serialized and a late callback can never move a bot backwards.
    """
    current = bot.status
    if not is_allowed(current, target):
        raise IllegalTransition(bot.id, current, target)
    now = at or utcnow()
    if target == S.STARTING:
        bot.started_at = now
    elif target == S.ACTIVE:
        bot.active_at = now
        bot.last_heartbeat_at = now
    elif target == S.STOPPING and bot.stop_requested_at is None:
        bot.stop_requested_at = now
    if target in TERMINAL:
        bot.ended_at = now
        bot.token_hash = None  # a bot's token dies with the bot
    if exit_code is not None:
        bot.exit_code = exit_code
    bot.status = target.value
    bot.status_reason = reason
    bot.updated_at = now
    row = BotTransition(
        bot_id=bot.id,
        from_status=current,
        to_status=target.value,
        reason=reason,
        source=source.value,
        detail=detail[:2000],
        attempt=bot.attempt,
        at=now,
    )
    session.add(row)
    record_event(
        session,
        bot=bot,
        kind="transition",
        data={
            "bot_id": bot.id,
            "from": current,
            "to": target.value,
            "reason": reason,
            "source": source.value,
            "detail": row.detail,
            "attempt": bot.attempt,
            "at": now.isoformat(),
        },
    )
    metrics.TRANSITIONS.labels(to=target.value, reason=reason, source=source.value).inc()
    return row

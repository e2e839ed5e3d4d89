"""The only function that changes a bot's status: `transition()`, which checks the move against
the table in `states.TRANSITIONS` and stores it as a row and an event.

Kept apart from the package's pure modules because it needs the database models, and the models
need `BotStatus`: importing it from `botfleet.manager.lifecycle` would be a cycle.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from botfleet.manager.core import metrics
from botfleet.manager.core.clock import database_now
from botfleet.manager.core.models import Bot, BotTransition, utcnow
from botfleet.manager.lifecycle.states import (
    TERMINAL,
    BotStatus,
    IllegalTransition,
    Source,
    is_allowed,
)
from botfleet.manager.messaging.outbox import record_event
from botfleet.manager.services.audit import actor_for

S = BotStatus


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
    actor: str | None = None,
) -> BotTransition:
    """Move `bot` to `target` and store the transition; raise IllegalTransition otherwise.

    A move into `starting` begins the next attempt (the only place the counter goes up). The
    caller must hold the bot's row lock (`services.bots.lock_bot`) so that concurrent updates
    are serialized and a late callback can never move a bot backwards. `actor` defaults to the
    request's caller for an API change, else to `source` (`manager/services/audit.py`).
    """
    current = bot.status
    if not is_allowed(current, target):
        raise IllegalTransition(bot.id, current, target)
    now = at or utcnow()
    if target == S.STARTING:
        bot.attempt += 1
        bot.started_at = now
        bot.stop_requested_at = None  # a new attempt: no stop asked of it yet
    elif target == S.ACTIVE:
        bot.active_at = now
        bot.last_heartbeat_at = database_now(
            session
        )  # one clock for heartbeats: manager/core/clock.py
    elif target == S.STOPPING and bot.stop_requested_at is None:
        bot.stop_requested_at = now
    if target in TERMINAL:
        bot.ended_at = now
        bot.token_hash = None  # a bot's token dies with the bot
    if exit_code is not None:
        bot.exit_code = exit_code
    bot.status = target
    bot.status_reason = reason
    bot.updated_at = now
    actor = actor or actor_for(session, source)
    row = BotTransition(
        bot_id=bot.id,
        from_status=current.value,
        to_status=target.value,
        reason=reason,
        source=source.value,
        actor=actor,
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
            "from": current.value,
            "to": target.value,
            "reason": reason,
            "source": source.value,
            "actor": actor,
            "detail": row.detail,
            "attempt": bot.attempt,
            "at": now.isoformat(),
        },
    )
    metrics.TRANSITIONS.labels(
        to=target.value, reason=metrics.reason_label(reason), source=source.value
    ).inc()
    return row

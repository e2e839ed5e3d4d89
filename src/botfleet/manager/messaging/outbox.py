"""The event outbox: what happened to bots, recorded with the change, fanned out after commit.

`record_event` adds a row in the caller's transaction. When that transaction commits, one
message on the Redis channel `botfleet:events` (`wake_event_streams`, registered in
`manager/after_commit.py`) wakes every replica's event streams (SSE) and the webhook sender;
they read the rows themselves, so a lost wake-up only delays them.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from botfleet.manager.core.models import Bot, Command, Event, utcnow

log = logging.getLogger(__name__)

WAKE_CHANNEL = "botfleet:events"
_PENDING_KEY = "botfleet_events_written"


def record_event(session: Session, *, bot: Bot, kind: str, data: dict[str, Any]) -> Event:
    row = Event(user_id=bot.user_id, bot_id=bot.id, kind=kind, data=data, at=utcnow())
    session.add(row)
    session.info[_PENDING_KEY] = True
    return row


def record_report_event(
    session: Session, *, user_id: str, bot_id: str, data: dict[str, Any], at: datetime
) -> Event:
    """A bot's report as written (manager/hot_path/report_batches.py): SSE `event: report`, webhook
    `bot.report`. Written from a guarded UPDATE, so it names the bot by id, not by row."""
    row = Event(
        user_id=user_id,
        bot_id=bot_id,
        kind="report",
        data={"bot_id": bot_id, "report": data, "reported_at": at.isoformat()},
        at=utcnow(),
    )
    session.add(row)
    session.info[_PENDING_KEY] = True
    return row


def record_command_event(session: Session, bot: Bot, command: Command) -> Event:
    """A command's change: SSE `event: command`; once it ended (acked, failed, expired), the
    webhook `command.result`, with the bot's `result` when it answered one."""
    data: dict[str, Any] = {
        "bot_id": bot.id,
        "command_id": command.id,
        "action": command.action,
        "status": command.status,
        "actor": command.actor,
        "error": command.error,
        "at": utcnow().isoformat(),
    }
    if command.status == "acked" and command.result is not None:
        data["result"] = command.result
    return record_event(session, bot=bot, kind="command", data=data)


def wake_event_streams(session: Session, client: redis.Redis) -> None:
    """After-commit listener (`manager/after_commit.py`): publish a wake-up when the
    transaction wrote events (best effort)."""
    if session.info.pop(_PENDING_KEY, False):
        try:
            client.publish(WAKE_CHANNEL, "1")
        except redis.RedisError as exc:  # the streams poll anyway
            log.debug("event wake-up not published: %s", exc)


def drop_event_wake(session: Session) -> None:
    """After-rollback listener: the rolled-back transaction wrote no event."""
    session.info.pop(_PENDING_KEY, None)


def latest_event_id(session: Session) -> int:
    return int(session.scalar(select(func.max(Event.id))) or 0)

"""Waking bots up for the commands already stored: the publish half of "stored first, then
published" (`manager/services/commands.py`).

A publish is best effort: the command stays stored whatever Redis says, the runtime reads
pending commands when it (re)connects, and housekeeping publishes again what is unacknowledged.
"""

from __future__ import annotations

import logging

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core import metrics
from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import Bot, Command, utcnow
from botfleet.manager.messaging.command_bus import CommandBus
from botfleet.manager.services import commands as command_records
from botfleet.runtime.protocol import command_channel

log = logging.getLogger(__name__)


class CommandPublisher:
    """Publishes stored commands on each bot's channel and notes every publish."""

    def __init__(self, *, sessions: sessionmaker[Session], bus: CommandBus, retry_s: float) -> None:
        self.sessions = sessions
        self.bus = bus
        self.retry_s = retry_s  # the first re-publish waits this long, then twice as long…

    def publish(self, command: Command) -> bool:
        """Wake the bot up over Redis. False when Redis refused; the command stays stored and
        housekeeping publishes it again.

        The message is signed with the token hash of the bot's current attempt (the runtime
        drops anything else); a bot without a token (ended, or not launched yet) has no one to
        wake: False, nothing sent."""
        with self.sessions() as session:
            key = session.scalar(select(Bot.token_hash).where(Bot.id == command.bot_id))
        if key is None:
            return False
        message = command_records.to_message(command)
        try:
            receivers = self.bus.publish(command.bot_id, message, key=key)
        except redis.RedisError as exc:
            metrics.COMMAND_PUBLISH_FAILURES.inc()
            log.warning(
                "could not publish %s to %s: %s",
                command.action,
                command_channel(command.bot_id),
                exc,
            )
            return False
        with transaction(self.sessions) as session:
            # Bot row first, then the command: the same order as an ack, so never a deadlock.
            session.get(Bot, command.bot_id, with_for_update=True)
            row = session.get(Command, command.id, with_for_update=True)
            if row is not None:
                command_records.mark_published(
                    session, row, receivers=receivers, retry_s=self.retry_s, now=utcnow()
                )
        return True

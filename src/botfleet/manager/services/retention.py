"""Retention: what is deleted, when, and how, so that nothing grows forever.

- An ended bot's record and all its history (transitions, commands with their configs,
  attempts, labels, its webhook override and every webhook delivery about it) go
  `BOTFLEET_RETAIN_ENDED_BOTS_DAYS` after it ended, its log files and Redis user with it.
- Outbox events, webhook deliveries (with their attempts) and bulk operations (with their
  results) go `BOTFLEET_RETAIN_EVENTS_DAYS` after they were written. 0 keeps them forever.
- `DELETE /bots/{id}` deletes one ended bot the same way, at once.

Pruning runs in housekeeping (leader only) in short transactions of at most `BATCH` rows each,
and at most `Budget.statements` of them a tick: a tick stays short, no lock is held long, and a
bot with a million commands is simply finished over several ticks. Children go before parents
(no reliance on ON DELETE CASCADE), and a bot's row goes last, after its log files: a failure
midway leaves a bot that the next tick finishes, never log files without a record. Every
statement is plain SQL that PostgreSQL and SQLite both run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import ColumnElement, CursorResult, delete, select
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.db import transaction
from botfleet.manager.core.errors import Conflict, ErrorCode
from botfleet.manager.core.models import (
    Bot,
    BotAttempt,
    BotLabel,
    BotTransition,
    Command,
    Event,
    utcnow,
)
from botfleet.manager.core.operation_models import BotEdit, Operation, OperationResult
from botfleet.manager.core.webhook_models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from botfleet.manager.lifecycle import TERMINAL
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services.unit_of_work import after_commit

if TYPE_CHECKING:
    from botfleet.manager.services.launcher import Launcher

log = logging.getLogger(__name__)

BATCH = 500  # rows per DELETE statement
STATEMENTS_PER_TICK = 20  # DELETE statements each prune may run in one housekeeping tick
BOTS_PER_ROUND = 50  # ended bots taken together


@dataclass
class Budget:
    """DELETE statements still allowed in this tick."""

    statements: int = STATEMENTS_PER_TICK

    def spend(self) -> bool:
        if self.statements <= 0:
            return False
        self.statements -= 1
        return True


def cutoff(days: float, now: datetime | None = None) -> datetime | None:
    """The moment before which rows go; None when the setting keeps them forever (0)."""
    if days <= 0:
        return None
    return (now or utcnow()) - timedelta(days=days)


# ---- one bot's history ------------------------------------------------------------------------

#: (table, its key, the bot column): a bot's rows, deleted before the bot itself. Deliveries go
#: with their attempts (`_delete_deliveries`); a bot's own webhook endpoint after its deliveries.
_HISTORY: tuple[tuple[Any, Any, Any], ...] = (
    (BotTransition, BotTransition.id, BotTransition.bot_id),
    (Command, Command.id, Command.bot_id),
    (BotAttempt, BotAttempt.attempt, BotAttempt.bot_id),
    (BotLabel, BotLabel.key, BotLabel.bot_id),
    (BotEdit, BotEdit.id, BotEdit.bot_id),
)


def delete_history(session: Session, bot_ids: Sequence[str]) -> None:
    """Every row about these bots, at once (one bot deleted by a request)."""
    ids = list(bot_ids)
    _delete_deliveries(session, WebhookDelivery.bot_id.in_(ids), limit=None)
    endpoints = select(WebhookEndpoint.id).where(WebhookEndpoint.bot_id.in_(ids))
    _delete_deliveries(session, WebhookDelivery.endpoint_id.in_(endpoints), limit=None)
    session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.bot_id.in_(ids)))
    for table, _, bot_column in _HISTORY:
        session.execute(delete(table).where(bot_column.in_(ids)))


def _delete_deliveries(session: Session, where: ColumnElement[bool], *, limit: int | None) -> int:
    """Deliveries matching `where` (at most `limit`), their attempts first; how many went."""
    query = select(WebhookDelivery.id).where(where)
    ids = list(session.scalars(query.limit(limit) if limit else query))
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(chunk)))
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(chunk)))
    return len(ids)


def _delete_batch(sessions: sessionmaker[Session], table: Any, key: Any, where: Any) -> int:
    """Up to BATCH rows of `table` matching `where`, in a transaction of their own."""
    with transaction(sessions) as session:
        keys = list(session.scalars(select(key).where(where).limit(BATCH)))
        if keys:
            session.execute(delete(table).where(where, key.in_(keys)))
    return len(keys)


def _prune_history(sessions: sessionmaker[Session], ids: list[str], budget: Budget) -> bool:
    """Delete the history of these bots in batches; True once none is left."""
    steps: list[Callable[[], int]] = []
    for table, key, bot_column in _HISTORY:
        steps.append(partial(_delete_batch, sessions, table, key, bot_column.in_(ids)))
    endpoints = select(WebhookEndpoint.id).where(WebhookEndpoint.bot_id.in_(ids))
    for where in (WebhookDelivery.bot_id.in_(ids), WebhookDelivery.endpoint_id.in_(endpoints)):
        steps.append(partial(_in_transaction, sessions, where))
    steps.append(
        lambda: _delete_batch(
            sessions, WebhookEndpoint, WebhookEndpoint.id, WebhookEndpoint.bot_id.in_(ids)
        )
    )
    for step in steps:
        while True:
            if not budget.spend():
                return False
            if step() < BATCH:
                break
    return True


def _in_transaction(sessions: sessionmaker[Session], where: ColumnElement[bool]) -> int:
    with transaction(sessions) as session:
        return _delete_deliveries(session, where, limit=BATCH)


# ---- the prunes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Forget:
    """What else a deleted bot leaves behind, outside the database: its log files (the
    orchestrator) and its Redis user (manager/messaging/bot_acl.py). Each must not raise for a bot
    it does not know."""

    logs: Callable[[str], None]
    redis_users: Callable[[list[str]], object] | None = None

    @classmethod
    def of(cls, launcher: Launcher) -> Forget:
        """What the launcher made for a bot: its workloads' log files and Redis users."""
        users = launcher.redis_users
        return cls(
            launcher.orchestrator.delete_logs, users.close_for if users is not None else None
        )

    def __call__(self, bot_ids: list[str]) -> list[str]:
        """Forget each bot's log files; returns the ids whose files are gone (the others keep
        their record, so the next tick tries again)."""
        done = []
        for bot_id in bot_ids:
            try:
                self.logs(bot_id)
            except Exception:
                log.exception("could not delete the log files of bot %s", bot_id)
                continue
            done.append(bot_id)
        if done and self.redis_users is not None:
            self.redis_users(done)
        return done


def prune_ended_bots(
    sessions: sessionmaker[Session], forget: Forget, *, days: float, budget: Budget
) -> int:
    """Delete bots that ended more than `days` ago, oldest first, with their history; returns
    how many bot records went in this call (the rest wait for the next tick)."""
    before = cutoff(days)
    if before is None:
        return 0
    with sessions() as session:
        ids = list(
            session.scalars(
                select(Bot.id)
                .where(Bot.ended_at < before, Bot.status.in_(list(TERMINAL)))
                .order_by(Bot.ended_at)
                .limit(BOTS_PER_ROUND)
            )
        )
    if not ids or not _prune_history(sessions, ids, budget):
        return 0
    gone = forget(ids)
    if not gone:
        return 0
    with transaction(sessions) as session:
        session.execute(delete(BotLabel).where(BotLabel.bot_id.in_(gone)))  # a late label
        result = session.execute(
            delete(Bot).where(Bot.id.in_(gone), Bot.status.in_(list(TERMINAL)))
        )
        deleted = cast(CursorResult[Any], result).rowcount
    log.info("retention: deleted %d bots that ended before %s", deleted, before.isoformat())
    return int(deleted or 0)


def prune_events(sessions: sessionmaker[Session], *, days: float, budget: Budget) -> int:
    """Delete outbox events and webhook deliveries older than `days`, from the oldest ids (both
    sort by time, so this needs no index on their time); returns how many rows went."""
    before = cutoff(days)
    if before is None:
        return 0
    total = 0
    for table, key, at in (
        (Event, Event.id, Event.at),
        (WebhookDelivery, WebhookDelivery.id, WebhookDelivery.created_at),
        # Bulk operations with their results (results first: they name their operation).
        (OperationResult, OperationResult.id, OperationResult.created_at),
        (Operation, Operation.id, Operation.created_at),
    ):
        while budget.spend():
            with transaction(sessions) as session:
                rows = session.execute(select(key, at).order_by(key).limit(BATCH)).all()
                old = [row[0] for row in rows if row[1] < before]
                if old and table is WebhookDelivery:
                    _delete_deliveries(session, WebhookDelivery.id.in_(old), limit=None)
                elif old:
                    session.execute(delete(table).where(key.in_(old)))
            total += len(old)
            if len(old) < BATCH:  # reached rows young enough to keep
                break
    return total


# ---- one bot, by request ----------------------------------------------------------------------


def delete_bot(session: Session, bot_id: str, *, user_id: str | None) -> None:
    """Delete an ended bot and its whole history in the caller's transaction (the caller then
    forgets its log files and Redis user, after the commit). 404 for an unknown or another
    user's bot (`user_id` None: the admin, any bot); 409 `bot_live` while it is live."""
    bot = bot_records.lock_bot(session, bot_id, user_id=user_id)
    if bot.status not in TERMINAL:
        raise Conflict(ErrorCode.BOT_LIVE, f"bot {bot_id} is {bot.status.value}: stop it first")
    delete_history(session, [bot_id])
    session.execute(delete(Bot).where(Bot.id == bot_id))
    session.expunge(bot)


def delete_bot_for_user(
    session: Session, launcher: Launcher, bot_id: str, *, user_id: str | None, purge_state: bool
) -> None:
    """`DELETE /bots/{id}` (the API and the dashboard): with `purge_state`, the bot's state
    directory is deleted first (`state_to_purge` refuses while another live bot holds the key);
    then the rows, and, once they are committed, the log files and the Redis user."""
    state = bot_records.state_to_purge(session, bot_id, user_id=user_id) if purge_state else None
    delete_bot(session, bot_id, user_id=user_id)
    if state is not None:
        launcher.purge_state(*state)
    forget = Forget.of(launcher)
    after_commit(session, lambda: forget([bot_id]))

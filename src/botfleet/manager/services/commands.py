"""Commands to bots: stored first, then published; acknowledged by the bot.

The database holds the desired state; Redis only wakes the bot. An unacknowledged command is
re-published with backoff until it expires, and the runtime reads pending commands when it
(re)connects, so a lost message never loses a command.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from botfleet.manager.core import metrics
from botfleet.manager.core.errors import ErrorCode, Invalid, NotFound
from botfleet.manager.core.models import Bot, Command, utcnow
from botfleet.manager.lifecycle.rules import check_accepts_command
from botfleet.manager.messaging.outbox import record_command_event
from botfleet.manager.schemas.api import check_config
from botfleet.manager.services.audit import command_actor
from botfleet.manager.services.bots import get_bot
from botfleet.manager.services.keyset import PageRequest, read_page
from botfleet.runtime.protocol import (
    ACTION_LEAVE,
    ACTION_RECONFIGURE,
    ACTION_SECRETS,
    MAX_RESULT_BYTES,
    CommandMessage,
    json_size,
)

OPEN_STATUSES = ("pending", "delivered")


def create_command(
    session: Session,
    bot: Bot,
    *,
    action: str,
    ttl_s: float,
    retry_s: float,
    config: dict[str, Any] | None = None,
    config_version: int | None = None,
    payload: dict[str, Any] | None = None,
    actor: str | None = None,
) -> Command:
    """Store a command; `actor` defaults to the request's caller (`manager/services/audit.py`)."""
    now = utcnow()
    command = Command(
        bot_id=bot.id,
        action=action,
        actor=actor or command_actor(session),
        status="pending",
        config=config,
        config_version=config_version,
        payload=payload,
        created_at=now,
        next_publish_at=now + timedelta(seconds=retry_s),
        expires_at=now + timedelta(seconds=ttl_s),
    )
    session.add(command)
    session.flush()
    record_command_event(session, bot, command)
    metrics.COMMANDS.labels(action=action).inc()
    return command


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch: objects merge recursively, `null` deletes a key, any other
    value (arrays included) replaces. Returns a new value; neither argument is changed."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def latest_config(session: Session, bot: Bot) -> dict[str, Any]:
    """The config the bot is headed for: that of the newest reconfigure the bot has not
    answered yet, else the config it acknowledged last (a refused or expired one never counts).
    A merge applies to this, so two quick PATCHes both land before the bot acknowledges any."""
    newest = session.scalar(
        select(Command)
        .where(
            Command.bot_id == bot.id,
            Command.action == ACTION_RECONFIGURE,
            Command.status.in_(OPEN_STATUSES),
            Command.config_version > bot.config_version,
        )
        .order_by(Command.config_version.desc())
        .limit(1)
    )
    if newest is not None and newest.config is not None:
        return dict(newest.config)
    return dict(bot.config or {})


def create_reconfigure(
    session: Session,
    bot: Bot,
    *,
    config: dict[str, Any],
    ttl_s: float,
    retry_s: float,
    merge: bool = False,
) -> Command:
    """A reconfigure for a locked bot that is `starting` or `active`, with the next version.

    `config` replaces the whole config, or with `merge` is a JSON Merge Patch applied to
    `latest_config`; either way the command carries the full resulting config. The bot's own
    `config` changes only when the bot acknowledges it: it always says what runs.
    """
    check_accepts_command(bot.id, bot.status, ACTION_RECONFIGURE)
    if merge:
        config = merge_patch(latest_config(session, bot), config)
        try:
            check_config(config)
        except ValueError as exc:
            raise Invalid(ErrorCode.INVALID_INPUT, f"config: once merged, {exc}") from exc
    highest = session.scalar(
        select(func.max(Command.config_version)).where(Command.bot_id == bot.id)
    )
    version = max(bot.config_version, highest or 0) + 1
    return create_command(
        session,
        bot,
        action=ACTION_RECONFIGURE,
        config=config,
        config_version=version,
        ttl_s=ttl_s,
        retry_s=retry_s,
    )


def create_leave(
    session: Session, bot: Bot, *, ttl_s: float, retry_s: float, actor: str | None = None
) -> Command:
    return create_command(
        session, bot, action=ACTION_LEAVE, ttl_s=ttl_s, retry_s=retry_s, actor=actor
    )


def create_custom(
    session: Session,
    bot: Bot,
    *,
    action: str,
    payload: dict[str, Any],
    ttl_s: float,
    retry_s: float,
) -> Command:
    """A custom command (the bot's `on_command`) for a locked bot that is `starting` or
    `active`; the schema already refused the manager's own actions."""
    check_accepts_command(bot.id, bot.status, action)
    return create_command(
        session, bot, action=action, payload=payload, ttl_s=ttl_s, retry_s=retry_s
    )


def create_secrets(
    session: Session, bot: Bot, *, sealed: str | None, ttl_s: float, retry_s: float
) -> Command:
    """Store a live bot's new secrets (sealed) and the `secrets` command that tells its runtime
    to fetch them over HTTP: the command itself carries none, so neither Redis nor the
    commands' list nor the event stream ever sees them."""
    check_accepts_command(bot.id, bot.status, ACTION_SECRETS)
    bot.secrets_sealed = sealed
    bot.updated_at = utcnow()
    return create_command(session, bot, action=ACTION_SECRETS, ttl_s=ttl_s, retry_s=retry_s)


def to_message(command: Command) -> CommandMessage:
    return CommandMessage(
        id=command.id,
        action=command.action,
        issued_at=command.created_at.isoformat(),
        config=command.config,
        config_version=command.config_version,
        payload=command.payload,
    )


def list_commands(
    session: Session, bot_id: str, *, user_id: str | None, page: PageRequest = PageRequest()
) -> tuple[list[Command], str | None]:
    """A page of the bot's commands, newest first; 404 for a bot that is not `user_id`'s (None:
    any)."""
    get_bot(session, bot_id, user_id=user_id)
    query = select(Command).where(Command.bot_id == bot_id)
    return read_page(session, query, keys=[Command.id], page=page, descending=True)


def get_command(session: Session, bot_id: str, command_id: str, *, user_id: str | None) -> Command:
    """One command of the bot; 404 for a bot that is not `user_id`'s (None: any)."""
    get_bot(session, bot_id, user_id=user_id)
    command = session.scalar(
        select(Command).where(Command.bot_id == bot_id, Command.id == command_id)
    )
    if command is None:
        raise NotFound(ErrorCode.COMMAND_NOT_FOUND, f"no command {command_id} for bot {bot_id}")
    return command


def for_runtime(
    session: Session, bot_id: str, *, pending_only: bool, page: PageRequest = PageRequest()
) -> tuple[list[CommandMessage], str | None]:
    """A page of what the runtime reads on (re)connect, oldest first, as the envelopes Redis
    carries: the open commands, or with `pending_only` False every command. Keyset pages: the
    runtime acknowledging commands while it reads never shifts the next page."""
    query = select(Command).where(Command.bot_id == bot_id)
    if pending_only:
        query = query.where(Command.status.in_(OPEN_STATUSES), Command.expires_at > utcnow())
    rows, next_cursor = read_page(session, query, keys=[Command.id], page=page)
    return [to_message(c) for c in rows], next_cursor


def mark_published(
    session: Session, command: Command, *, receivers: int, retry_s: float, now: datetime
) -> None:
    """Note a publish; the next one waits exponentially longer (capped at 5 minutes)."""
    command.publish_count += 1
    if receivers > 0 and command.status == "pending":
        command.status = "delivered"
        command.delivered_at = now
        bot = session.get(Bot, command.bot_id)
        if bot is not None:
            record_command_event(session, bot, command)
    delay = min(retry_s * 2 ** (command.publish_count - 1), 300.0)
    command.next_publish_at = now + timedelta(seconds=delay)


def expire(session: Session, command: Command, *, reason: str) -> None:
    command.status = "expired"
    command.error = reason
    bot = session.get(Bot, command.bot_id)
    if bot is not None:
        record_command_event(session, bot, command)


def record_ack(
    session: Session,
    bot: Bot,
    command_id: str,
    *,
    ok: bool,
    error: str | None,
    result: Any = None,
) -> Command:
    """Store the bot's answer, with a custom command's `result`. Acks are idempotent: the first
    answer stands. A result over MAX_RESULT_BYTES fails the command (the runtime checks first;
    this holds for any runtime)."""
    command = session.scalar(
        select(Command).where(Command.bot_id == bot.id, Command.id == command_id).with_for_update()
    )
    if command is None:
        raise NotFound(ErrorCode.COMMAND_NOT_FOUND, f"no command {command_id} for bot {bot.id}")
    if command.status in ("acked", "failed"):
        return command
    now = utcnow()
    if ok and result is not None and (size := json_size(result)) > MAX_RESULT_BYTES:
        ok, error, result = (
            False,
            f"result_too_large: {size} bytes, at most {MAX_RESULT_BYTES}",
            None,
        )
    command.status = "acked" if ok else "failed"
    command.error = None if ok else (error or "refused by the bot")
    command.result = result if ok else None
    command.acked_at = now
    metrics.COMMAND_ROUND_TRIP.labels(command.action, command.status).observe(
        (now - command.created_at).total_seconds()
    )
    if command.delivered_at is None:
        command.delivered_at = now
    record_command_event(session, bot, command)
    if ok and command.action == ACTION_RECONFIGURE and command.config is not None:
        version = command.config_version or 0
        if version > bot.config_version:
            bot.config = command.config
            bot.config_version = version
            bot.updated_at = now
    return command

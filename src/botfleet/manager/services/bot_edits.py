"""`PATCH /bots/{id}`: change what a bot is called, its labels, when it starts, how long it may
run, its restart policy and its queue priority, as far as its state allows; each change that
changed something is audited as a `BotEdit` row (`GET /bots/{id}/edits`).

What each state allows (409 `not_editable` otherwise, naming the field):

| field | while |
|---|---|
| `name`, `labels` | always, an ended bot included (they organise the record) |
| `start_at` | `queued` or `requested`: the launch has not begun |
| `max_duration_s`, `restart`, `priority` | live (not `completed` or `failed`) |
"""

from __future__ import annotations

from datetime import UTC
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from botfleet.manager.core.errors import Conflict, ErrorCode, Invalid
from botfleet.manager.core.models import Bot, BotLabel, utcnow
from botfleet.manager.core.operation_models import BotEdit
from botfleet.manager.core.statuses import TERMINAL
from botfleet.manager.lifecycle.queue_order import in_line_since
from botfleet.manager.schemas.bots import MAX_LABELS
from botfleet.manager.schemas.operations import BotEditBody
from botfleet.manager.services import audit
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services.keyset import PageRequest, read_page
from botfleet.manager.services.unit_of_work import after_commit

if TYPE_CHECKING:
    from botfleet.manager.services.launcher import Launcher

#: The statuses in which the launch has not begun: `start_at` may still move.
BEFORE_LAUNCH = frozenset({"queued", "requested"})
ANY_STATE = frozenset({"name", "labels"})
WHILE_LIVE = frozenset({"max_duration_s", "restart", "priority"})


def refuse_fields(status: str, fields: set[str]) -> None:
    """409 `not_editable` when the bot's status does not allow one of these fields."""
    for field in sorted(fields - ANY_STATE):
        if field == "start_at" and status not in BEFORE_LAUNCH:
            why = "only while the bot is queued or requested (its launch has not begun)"
        elif field in WHILE_LIVE and status in TERMINAL:
            why = "only while the bot is live"
        else:
            continue
        raise Conflict(
            ErrorCode.NOT_EDITABLE,
            f"{field} can no longer change: the bot is {status}; it changes {why}",
            field=field,
            status=status,
        )


def merged_labels(current: dict[str, str], patch: dict[str, str | None]) -> dict[str, str]:
    """`current` with `patch` merged in: a value sets the label, `null` removes it."""
    labels = dict(current)
    for key, value in patch.items():
        if value is None:
            labels.pop(key, None)
        else:
            labels[key] = value
    if len(labels) > MAX_LABELS:
        raise Invalid(ErrorCode.INVALID_INPUT, f"labels: at most {MAX_LABELS} labels")
    return labels


def merged_restart(bot: Bot, body: BotEditBody) -> tuple[int, float, list[str] | None]:
    """(max_retries, backoff_s, on) once the edit's `restart` is applied: the fields it gives
    replace the bot's, `null` as a whole means no restarts."""
    if body.restart is None:
        return 0, 5.0, None
    given, asked = body.restart.model_fields_set, body.restart
    on = bot.restart_on
    if "on" in given:
        on = list(asked.on) if asked.on is not None else None
    return (
        asked.max_retries if "max_retries" in given else bot.restart_max_retries,
        asked.backoff_s if "backoff_s" in given else float(bot.restart_backoff_s),
        on,
    )


def _shown(value: Any) -> Any:
    """A value as JSON keeps it (times as ISO text)."""
    return value.isoformat() if hasattr(value, "isoformat") else value


def edit_bot(
    session: Session, *, bot_id: str, user_id: str | None, body: BotEditBody, launcher: Launcher
) -> Bot:
    """Apply the edit under the bot's row lock and audit what changed; a `requested` bot whose
    start time moved to now or earlier (or away) is launched once this commits."""
    bot = bot_records.lock_bot(session, bot_id, user_id=user_id)
    asked = set(body.model_fields_set)
    refuse_fields(str(bot.status), asked)
    before = {"name": bot.name, "labels": dict(bot.labels or {}), "start_at": bot.start_at,
              "max_duration_s": bot.max_duration_s, "restart": bot.restart,
              "priority": bot.priority}  # fmt: skip
    if "name" in asked:
        bot.name = body.name
    if "labels" in asked:
        labels = merged_labels(bot.labels or {}, body.labels or {})
        if labels != bot.labels:
            bot.labels = labels
            session.execute(delete(BotLabel).where(BotLabel.bot_id == bot.id))
            session.add_all(BotLabel(bot_id=bot.id, key=k, value=v) for k, v in labels.items())
    if "start_at" in asked:  # kept (and answered) in UTC, as the database holds it
        bot.start_at = body.start_at.astimezone(UTC) if body.start_at else None
    if "max_duration_s" in asked:
        bot.max_duration_s = body.max_duration_s
    if "restart" in asked:
        bot.restart_max_retries, bot.restart_backoff_s, bot.restart_on = merged_restart(bot, body)
    if "priority" in asked:
        bot.priority = body.priority or 0
    after = {"name": bot.name, "labels": dict(bot.labels or {}), "start_at": bot.start_at,
             "max_duration_s": bot.max_duration_s, "restart": bot.restart,
             "priority": bot.priority}  # fmt: skip
    changes = {
        field: {"from": _shown(before[field]), "to": _shown(after[field])}
        for field in before
        if before[field] != after[field]
    }
    if not changes:
        return bot
    now = utcnow()
    bot.updated_at = now
    session.add(BotEdit(bot_id=bot.id, actor=audit.request_actor(session), changes=changes, at=now))
    if "start_at" in changes and str(bot.status) == "queued":  # its place in line moves too
        bot.queued_at = in_line_since(bot.created_at, bot.start_at)
    due = bot.start_at is None or bot.start_at <= now
    if "start_at" in changes and str(bot.status) == "requested" and due:
        after_commit(session, partial(launcher.submit, launcher.launch, bot.id))
    return bot


def list_edits(
    session: Session, bot_id: str, *, user_id: str | None, page: PageRequest = PageRequest()
) -> tuple[list[BotEdit], str | None]:
    """A page of the bot's edits, newest first; 404 for a bot that is not `user_id`'s."""
    bot_records.get_bot(session, bot_id, user_id=user_id)
    query = select(BotEdit).where(BotEdit.bot_id == bot_id)
    return read_page(session, query, keys=[BotEdit.id], page=page, descending=True)

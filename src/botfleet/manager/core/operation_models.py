"""Bulk operations (`POST /bots/actions`), their per-bot results, and bot edits (PATCH).

An operation records its selector's bots once, when it is created: one `OperationResult` row
each, `ok` None until the leader's worker (manager/background/operations.py) has acted on that
bot. The rows are the record of what was selected, the worker's to-do list and the results page
at once. Neither table has a foreign key to `bots`: a bulk delete removes the bots its results
name, and the results stay.

A `BotEdit` is the audit of one `PATCH /bots/{id}`: the fields it changed, from what to what,
and who changed them (an edit moves no status, so it is no transition).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from botfleet.manager.core.models import Base, JSONType, UTCDateTime, new_id, utcnow

#: The operations the worker still has to go through (`ix_operations_running` states it).
RUNNING_SQL = "status = 'running'"
#: The results not processed yet (`ix_operation_results_pending` states it).
PENDING_SQL = "ok IS NULL"

BigId = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER only


class Operation(Base):
    __tablename__ = "operations"
    __table_args__ = (
        Index("ix_operations_user_id_id", "user_id", "id"),
        Index(
            "ix_operations_running",
            "status",
            postgresql_where=text(RUNNING_SQL),
            sqlite_where=text(RUNNING_SQL),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(16))  # stop, reconfigure, command, relaunch, delete
    status: Mapped[str] = mapped_column(String(16), default="running")  # running, done, cancelled
    selector: Mapped[dict[str, Any]] = mapped_column(JSONType)  # as asked, for the record
    config: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # reconfigure: the patch
    command: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # {action, payload}
    # Who asked (`key:<key id>`): every per-bot change is attributed to it.
    actor: Mapped[str | None] = mapped_column(String(64))
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)  # bots the action succeeded on
    failed: Mapped[int] = mapped_column(Integer, default=0)  # bots it was refused on
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OperationResult(Base):
    """One selected bot of an operation; `ok` None while it waits for the worker."""

    __tablename__ = "operation_results"
    __table_args__ = (
        Index("ix_operation_results_operation_id_id", "operation_id", "id"),
        Index(
            "ix_operation_results_pending",
            "operation_id",
            "id",
            postgresql_where=text(PENDING_SQL),
            sqlite_where=text(PENDING_SQL),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    operation_id: Mapped[str] = mapped_column(String(36))
    bot_id: Mapped[str] = mapped_column(String(64))  # as given in `ids`, or a selected bot's
    ok: Mapped[bool | None] = mapped_column(Boolean)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # {code, message, status}
    result: Mapped[Any | None] = mapped_column(JSONType)
    # The operation's creation time: retention deletes results with their operation.
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BotEdit(Base):
    """One `PATCH /bots/{id}` that changed something: `{field: {"from": old, "to": new}}`."""

    __tablename__ = "bot_edits"
    __table_args__ = (Index("ix_bot_edits_bot_id_id", "bot_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    actor: Mapped[str | None] = mapped_column(String(64))
    changes: Mapped[dict[str, Any]] = mapped_column(JSONType)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

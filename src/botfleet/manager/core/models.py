"""Database tables. The bot row *is* the bot's state: there is no in-memory state machine."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from botfleet.manager.core.column_types import JSONType, StatusType, UTCDateTime, new_id, utcnow
from botfleet.manager.core.statuses import RESTART_ON_DEFAULT, BotStatus

TERMINAL_SQL = "status IN ('completed', 'failed')"
#: The live bots, as the partial index `ix_bots_live` states them: a query uses that index only
#: when its WHERE clause says exactly this (PostgreSQL and SQLite prove coverage by matching).
LIVE_SQL = f"NOT ({TERMINAL_SQL})"


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class FleetMeta(Base):
    """Facts about this installation, such as its fleet id (the label on its workloads)."""

    __tablename__ = "fleet_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(300))


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    max_concurrent_bots: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set: every key of the user answers 401 (its bots run on).
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # `{max_retries, backoff_s, on?}` applied to a POST /bots that names no `restart`; None: none.
    default_restart: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    queue_by_default: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    keys: Mapped[list[ApiKey]] = relationship(back_populates="user")


class ApiKey(Base):
    """An API key, stored as a SHA-256 hash (keys are long random strings, so no slow hash)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    name: Mapped[str | None] = mapped_column(String(100))
    scopes: Mapped[str] = mapped_column(String(100), default="bots:read bots:write")  # spaced
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Written at most once a minute per key and process (manager/hot_path/key_usage.py).
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="keys")


class Bot(Base):
    __tablename__ = "bots"
    __table_args__ = (
        Index("ix_bots_user_created", "user_id", "id"),
        Index("ix_bots_status", "status"),
        Index("ix_bots_ended_at", "ended_at"),  # retention finds the oldest ended bots
        # The reconciler reads every live bot each tick, whatever the number of ended ones.
        Index(
            "ix_bots_live",
            "status",
            postgresql_where=text(LIVE_SQL),
            sqlite_where=text(LIVE_SQL),
        ),
        # A dedup_key is unique among one user's live bots, enforced by the database.
        Index(
            "uq_bots_user_dedup_live",
            "user_id",
            "dedup_key",
            unique=True,
            postgresql_where=text(f"dedup_key IS NOT NULL AND NOT ({TERMINAL_SQL})"),
            sqlite_where=text(f"dedup_key IS NOT NULL AND NOT ({TERMINAL_SQL})"),
        ),
        # A state_key is held by at most one of a user's live bots (409 `state_in_use`).
        Index(
            "uq_bots_user_state_live",
            "user_id",
            "state_key",
            unique=True,
            postgresql_where=text(f"state_key IS NOT NULL AND NOT ({TERMINAL_SQL})"),
            sqlite_where=text(f"state_key IS NOT NULL AND NOT ({TERMINAL_SQL})"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    status: Mapped[BotStatus] = mapped_column(StatusType, default=BotStatus.REQUESTED)
    status_reason: Mapped[str | None] = mapped_column(String(64))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    orchestrator: Mapped[str] = mapped_column(String(16))
    runtime_ref: Mapped[str | None] = mapped_column(String(200))

    name: Mapped[str | None] = mapped_column(String(200))
    bot: Mapped[str] = mapped_column(String(200))
    image: Mapped[str | None] = mapped_column(String(300))
    platform: Mapped[str | None] = mapped_column(String(64))
    native_id: Mapped[str | None] = mapped_column(String(300))
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    config_version: Mapped[int] = mapped_column(Integer, default=1)
    # Sealed with Fernet (manager/core/sealing.py); never returned, logged or labelled.
    secrets_sealed: Mapped[str | None] = mapped_column(Text)
    labels: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    dedup_key: Mapped[str | None] = mapped_column(String(200))
    start_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    max_duration_s: Mapped[int | None] = mapped_column(Integer)
    restart_max_retries: Mapped[int] = mapped_column(Integer, default=0)
    restart_backoff_s: Mapped[float] = mapped_column(default=5.0)
    # Which failures the restart policy retries: crash, heartbeat_lost, start_failed; None: the
    # default (RESTART_ON_DEFAULT in manager/core/statuses.py).
    restart_on: Mapped[list[str] | None] = mapped_column(JSONType)
    # The ended bot this one relaunches (POST /bots/{id}/relaunch); not a foreign key: the old
    # record may be deleted and the new bot lives on.
    relaunch_of: Mapped[str | None] = mapped_column(String(36))
    # The persistent directory this bot holds (one live bot per user and key).
    state_key: Mapped[str | None] = mapped_column(String(200))
    # The version of its kind (core/kind_models.py) the bot runs; None: a raw `module:Class`.
    kind_version: Mapped[int | None] = mapped_column(Integer)
    # The queue: higher priority first, then first come; failed `queue_timeout` after the timeout.
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    queue_timeout_s: Mapped[float | None] = mapped_column(Float)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    schedule_id: Mapped[str | None] = mapped_column(String(36), index=True)  # no FK: kept on delete
    # Health rules (CONTRACT v3) and what they have seen so far (since when a field held a value).
    health_rules: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    health_state: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Its own CPU and memory ({"cpu", "memory_mb"}) and placement ({"constraints",
    # "node_labels"}); None: its kind's, else the backend's defaults (migration 0021).
    resources: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    placement: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    token_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    stop_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The last output lines, kept when the engine forgets the workload (a removed container).
    last_logs: Mapped[str | None] = mapped_column(Text)
    # When a restart is due (restart policy backoff); None when no relaunch is waiting.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The bot's latest report (`Bot.report` in the runtime), coalesced by
    # manager/hot_path/report_batches.py.
    report: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    active_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def restart(self) -> dict[str, Any]:
        """The restart policy as the API shows it, `on` spelled out."""
        on = RESTART_ON_DEFAULT if self.restart_on is None else self.restart_on
        return {
            "max_retries": self.restart_max_retries,
            "backoff_s": self.restart_backoff_s,
            "on": list(on),
        }

    @validates("status")
    def _typed_status(self, _key: str, value: str) -> BotStatus:
        """A plain string assigned to `status` becomes a `BotStatus` at once (an unknown one
        raises), so code never casts what it reads back."""
        return BotStatus(value)


class IdempotencyRecord(Base):
    """The first answer to a request sent with an `Idempotency-Key`, replayed for 24 hours."""

    __tablename__ = "idempotency_records"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)  # None while the first runs
    body: Mapped[Any | None] = mapped_column(JSONType)  # answers kept before migration 0009
    # The answer's exact JSON text: replayed byte for byte (JSONB would reorder the keys).
    answer: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Event(Base):
    """The outbox: every transition and command status change, in commit order.

    Written in the same transaction as the change itself; its id is the SSE event id
    (`Last-Event-ID` resumes after it) and what webhooks deliver.
    """

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_user_id_id", "user_id", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    user_id: Mapped[str] = mapped_column(String(36))
    bot_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(16))  # "transition" | "command" | "report"
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BotLabel(Base):
    """Labels again as rows, so `?label=k:v` is an indexed join on every database."""

    __tablename__ = "bot_labels"
    __table_args__ = (Index("ix_bot_labels_kv", "key", "value"),)

    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(String(300))


#: Attempts whose runtime reported `exited` and whose workload is not confirmed gone yet: the
#: reconciler reads them each tick through `ix_bot_attempts_exit_pending` (this predicate).
EXIT_PENDING_SQL = "reported_at IS NOT NULL AND ended_at IS NULL"


class BotAttempt(Base):
    """One launch of a bot: each attempt keeps its own workload reference and exit code, and
    the runtime's `exited` report (`reported_*`) until its workload is gone and it ends."""

    __tablename__ = "bot_attempts"
    __table_args__ = (
        Index(
            "ix_bot_attempts_exit_pending",
            "bot_id",
            postgresql_where=text(EXIT_PENDING_SQL),
            sqlite_where=text(EXIT_PENDING_SQL),
        ),
    )

    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    runtime_ref: Mapped[str | None] = mapped_column(String(200))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str | None] = mapped_column(String(64))
    launched_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reported_exit_code: Mapped[int | None] = mapped_column(Integer)
    reported_reason: Mapped[str | None] = mapped_column(String(64))
    reported_detail: Mapped[str | None] = mapped_column(Text)
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BotTransition(Base):
    __tablename__ = "bot_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[str] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))
    # key:<key id>, admin, runtime, reconciler, scheduler, orchestrator (manager/services/audit.py)
    actor: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Command(Base):
    """A command to a bot. Stored before it is published; Redis only wakes the bot."""

    __tablename__ = "commands"
    __table_args__ = (
        Index("ix_commands_bot_created", "bot_id", "id"),
        Index("ix_commands_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    actor: Mapped[str | None] = mapped_column(String(64))  # who asked (manager/services/audit.py)
    config: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    config_version: Mapped[int | None] = mapped_column(Integer)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # a custom command's
    result: Mapped[Any | None] = mapped_column(JSONType)  # the bot's answer to a custom command
    error: Mapped[str | None] = mapped_column(Text)
    publish_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_publish_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AdminAudit(Base):
    """One admin action (user created, limit changed, key created or revoked, user disabled)."""

    __tablename__ = "admin_audit"
    __table_args__ = (Index("ix_admin_audit_user_id_id", "user_id", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(100))  # user:<id> or key:<id>
    user_id: Mapped[str | None] = mapped_column(String(36))
    change: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

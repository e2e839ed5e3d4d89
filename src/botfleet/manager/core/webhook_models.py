"""Webhook tables: endpoints (a user's default, a bot's override, or one of a user's
subscriptions), deliveries, attempts."""

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
    String,
    Text,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from botfleet.manager.core.models import Base, JSONType, UTCDateTime, new_id, utcnow

#: The one `PUT /webhook` endpoint per user: a user-level endpoint that is no subscription.
DEFAULT_ENDPOINT_SQL = "bot_id IS NULL AND NOT subscription"


class WebhookEndpoint(Base):
    """Where a user's events go: `bot_id` None and not `subscription` is the user's default
    (`PUT /webhook`), `bot_id` set a bot's override, `subscription` one of the user's
    `POST /webhooks` endpoints (several, each with its own filters).

    `cursor` is the last outbox event id fanned out to this endpoint; a new endpoint starts at
    the newest event (no history flood). A bot with an override is not sent to the default for
    events after the override's `start_event_id` (subscriptions get it whatever the override).
    """

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        Index("uq_webhook_endpoints_user_bot", "user_id", "bot_id", unique=True),
        # NULLs are distinct in a unique index: one default per user needs its own index.
        Index(
            "uq_webhook_endpoints_user_default",
            "user_id",
            unique=True,
            postgresql_where=text(DEFAULT_ENDPOINT_SQL),
            sqlite_where=text(DEFAULT_ENDPOINT_SQL),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    bot_id: Mapped[str | None] = mapped_column(
        ForeignKey("bots.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2000))
    # The `whsec_` + base64 signing secret, sealed like bot secrets (manager/core/sealing.py): shown
    # once at creation, opened only to sign, never stored in clear.
    secret_sealed: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    start_event_id: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The circuit breaker (manager/services/webhook_breaker.py): failed attempts in a row, since
    # when, and the pause it is in (`pause_s` > 0: tripped in this streak; after `paused_until` one
    # probe is sent, whose success closes it).
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pause_s: Mapped[float] = mapped_column(Float, default=0.0)
    # Subscriptions (0020; services/webhook_filters.py): `events` None is every type, else the
    # types (or `bot.transition.<status>`) sent; `label_filter` None or the labels a bot must
    # all have; custom headers sealed like the secret (a JSON object), their names in clear.
    subscription: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    name: Mapped[str | None] = mapped_column(String(100))
    events: Mapped[list[str] | None] = mapped_column(JSONType)
    label_filter: Mapped[dict[str, str] | None] = mapped_column(JSONType)
    headers_sealed: Mapped[str | None] = mapped_column(Text)
    header_names: Mapped[list[str] | None] = mapped_column(JSONType)


class WebhookDelivery(Base):
    """One event for one endpoint: `pending` until a 2xx (`delivered`) or until it gives up
    (`failed`, at `expires_at`). The envelope is kept as sent, so a redelivery is identical."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint_id", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_bot_id", "bot_id"),  # a deleted bot's go with it (0008)
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(BigInteger)
    bot_id: Mapped[str] = mapped_column(String(36))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookAttempt(Base):
    """One POST of a delivery: the answer's status code, or the error (refused, timeout…)."""

    __tablename__ = "webhook_attempts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)

"""Schedule tables: a schedule (a cron expression in a time zone, and the POST /bots body it
starts), and its firings (each fire time, the bot it started or why none, and when that bot is
to be stopped).

`next_fire_at` is indexed: the leader's loop reads only the schedules that are due. A firing is
unique per schedule and fire time: two replicas (or two passes) can never both fire one time.
Firings name their schedule without a foreign key, like `Bot.schedule_id`: a deleted schedule's
bots keep their pending stops (`stop_at`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from botfleet.manager.core.models import Base, JSONType, UTCDateTime, new_id, utcnow


class Schedule(Base):
    __tablename__ = "schedules"
    __table_args__ = (
        Index("ix_schedules_user_id_id", "user_id", "id"),
        Index("ix_schedules_next_fire_at", "next_fire_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    cron: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    # The POST /bots body each firing sends, validated when stored; never its secrets, which
    # are sealed apart (manager/core/sealing.py) and never shown.
    template: Mapped[dict[str, Any]] = mapped_column(JSONType)
    template_secrets_sealed: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[int | None] = mapped_column(Integer)
    window_end: Mapped[str | None] = mapped_column(String(5))  # "HH:MM" in `timezone`
    overlap: Mapped[str] = mapped_column(String(16), default="skip")  # skip | allow | replace
    missed: Mapped[str] = mapped_column(String(16), default="skip")  # skip | run_once
    paused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The next fire time (UTC); None while paused.
    next_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The latest firing, as `GET /schedules/{id}` shows it (the history is `ScheduleFiring`).
    last_fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_outcome: Mapped[str | None] = mapped_column(String(16))
    last_bot_id: Mapped[str | None] = mapped_column(String(36))
    last_reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ScheduleFiring(Base):
    """One fire time of a schedule: `started` or `queued` (a bot), `skipped` (the previous bot
    still live), `failed` (POST /bots refused: `reason` is its code), `missed` (the manager was
    not running at the time)."""

    __tablename__ = "schedule_firings"
    __table_args__ = (
        Index("uq_schedule_firings_schedule_fired_for", "schedule_id", "fired_for", unique=True),
        Index("ix_schedule_firings_schedule_id_id", "schedule_id", "id"),
        Index("ix_schedule_firings_stop_at", "stop_at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    schedule_id: Mapped[str] = mapped_column(String(36))  # no FK: pending stops outlive it
    fired_for: Mapped[datetime] = mapped_column(UTCDateTime)  # the fire time, as scheduled
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)  # when it was handled
    outcome: Mapped[str] = mapped_column(String(16))
    bot_id: Mapped[str | None] = mapped_column(String(36))
    reason: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")
    # When the bot is stopped (duration_s, window_end); None once done, or when it has no end.
    stop_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The stop's transition reason: `schedule_duration` or `schedule_window`.
    stop_reason: Mapped[str | None] = mapped_column(String(32))

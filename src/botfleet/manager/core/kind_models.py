"""The `kinds` table: what users may start, one row per registered version of a kind.

A bot keeps the version it started with (`Bot.kind_version`), so its rows are never changed
except `retired_at`: an update inserts the next version, a retirement stamps the kind's rows.
The built-in kinds (`demo`, `telegram`) have no rows: they are documents in code
(manager/services/builtin_kinds.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from botfleet.manager.core.models import Base, JSONType, UTCDateTime, utcnow


class Kind(Base):
    __tablename__ = "kinds"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    # {"python": "module:Class"} or {"exec": ["cmd", "arg", ...]}
    run: Mapped[dict[str, Any]] = mapped_column(JSONType)
    image: Mapped[str | None] = mapped_column(String(300))
    # {"wheels": [...]} or {"requirements": [...]}: the process backend's virtualenv of the kind
    package: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    config_schema: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    secrets: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # {"<action>": <JSON Schema of its payload>}; None: any action, unchecked
    commands: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    resources: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Where its bots run unless they name their own ({"constraints", "node_labels"}).
    placement: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    restart: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Health rules every bot of this version gets unless it names its own (CONTRACT v3).
    health: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set on every row of a retired kind: no new bot of it starts (running ones run on).
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

"""The database, its connection pool, and how many requests may use it at once."""

from __future__ import annotations

from pydantic import Field

from botfleet.manager.core.settings.area import SettingsArea


class DatabaseSettings(SettingsArea):
    """Pool and admission: manager/core/db.py, manager/http/admission.py."""

    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; SQLite in the data folder when unset. "
        "PostgreSQL: postgresql+psycopg://user:pass@host/db",
    )
    db_pool_size: int = Field(
        20,
        ge=2,
        description="Connections kept in the pool; also how many requests work at once "
        "(the rest wait for a place, on the event loop).",
    )
    db_pool_overflow: int = Field(
        20, ge=0, description="Extra connections opened under load, for launches and loops."
    )
    db_pool_timeout_s: float = Field(
        10.0,
        gt=0,
        description="How long a thread waits for a pooled connection before the request "
        "answers 503 `database_busy`.",
    )
    db_reserved_for_bots: int = Field(
        4,
        ge=1,
        description="Of the pool's places, those kept for bots' callbacks (`/internal/…`), so "
        "users flooding the API never starve heartbeats; must be below BOTFLEET_DB_POOL_SIZE.",
    )
    admission_wait_s: float = Field(
        5.0,
        gt=0,
        description="How long a request waits for a place before it answers 503 "
        "`database_busy` with Retry-After.",
    )

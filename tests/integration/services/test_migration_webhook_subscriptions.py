"""Migration 0020 (webhook subscriptions) on a real database (PostgreSQL, then SQLite): existing
endpoints keep the types they were sent; a user may then have several user-level endpoints but
still one default; the downgrade drops the subscriptions and restores the one-per-user rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from botfleet.manager.core.db import make_engine
from botfleet.manager.migrate import alembic_config, upgrade
from tests.support import fresh_database_url

ENDPOINT = (
    "INSERT INTO webhook_endpoints (id, user_id, url, secret_sealed, enabled, cursor, "
    "start_event_id, created_at, updated_at{extra}) VALUES (:id, 'u1', 'http://x.test/', 's', "
    "true, 0, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP{values})"
)


def test_subscriptions_upgrade_and_downgrade(tmp_path: Path) -> None:
    url = fresh_database_url(tmp_path)
    upgrade(url, "0019")
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (id, name, max_concurrent_bots, created_at) "
                    "VALUES ('u1', 'old', 1, CURRENT_TIMESTAMP)"
                )
            )
            connection.execute(text(ENDPOINT.format(extra="", values="")), {"id": "e1"})
        upgrade(url, "0020")
        engine.dispose()
        subscription = ENDPOINT.format(extra=", subscription", values=", true")
        with engine.begin() as connection:
            row = connection.execute(
                text("SELECT events, subscription FROM webhook_endpoints")
            ).one()
            events = row.events if isinstance(row.events, list) else json.loads(row.events)
            assert (events, bool(row.subscription)) == (["bot.transition", "bot.report"], False)
            for endpoint_id in ("s1", "s2"):  # several besides the default
                connection.execute(text(subscription), {"id": endpoint_id})
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(text(ENDPOINT.format(extra="", values="")), {"id": "e2"})

        command.downgrade(alembic_config(url), "0019")
        engine.dispose()
        with engine.connect() as connection:
            left = connection.execute(text("SELECT id FROM webhook_endpoints")).scalars().all()
        assert left == ["e1"], "the subscriptions went; the default stayed"
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(text(ENDPOINT.format(extra="", values="")), {"id": "e2"})
        upgrade(url, "0020")
    finally:
        engine.dispose()

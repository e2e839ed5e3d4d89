"""Migrations against a real database (PostgreSQL, and SQLite in the second run): 0007 seals the
webhook secrets that 0006 stored in clear, and its downgrade opens them again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import text

from botfleet.manager.core.db import make_engine
from botfleet.manager.core.sealing import SecretBox
from botfleet.manager.core.settings import Settings
from botfleet.manager.core.webhook_signing import new_secret
from botfleet.manager.migrate import alembic_config, upgrade
from tests.support import fresh_database_url

KEY_1, KEY_2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def endpoint_rows(database_url: str) -> list[dict[str, Any]]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT * FROM webhook_endpoints")).mappings().all()
            return [dict(row) for row in rows]
    finally:
        engine.dispose()


def test_the_migration_seals_secrets_stored_in_clear(tmp_path: Path) -> None:
    url = fresh_database_url(tmp_path)
    upgrade(url, "0006")
    clear = new_secret()
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (id, name, max_concurrent_bots, created_at) "
                    "VALUES ('u1', 'old', 1, CURRENT_TIMESTAMP)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO webhook_endpoints (id, user_id, url, secret, enabled, cursor, "
                    "start_event_id, created_at, updated_at) VALUES ('e1', 'u1', "
                    "'http://x.test/', :secret, true, 0, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"secret": clear},
            )
        settings = Settings(secrets_keys=KEY_1, data_dir=tmp_path / "data")
        upgrade(url, "0007", settings=settings)
        [row] = endpoint_rows(url)
        assert "secret" not in row, "the clear column is gone"
        assert "whsec_" not in json.dumps(row, default=str)
        assert SecretBox([KEY_1]).open_text(row["secret_sealed"]) == clear
        assert not (tmp_path / "data").exists(), "the configured keys were used, none generated"

        from alembic import command

        command.downgrade(alembic_config(url, settings), "0006")
        [row] = endpoint_rows(url)
        assert row["secret"] == clear and "secret_sealed" not in row
    finally:
        engine.dispose()


def test_exit_reports_on_attempts_upgrade_and_downgrade(tmp_path: Path) -> None:
    """0014 adds the runtime's exit report to each attempt, and its partial index; its
    downgrade drops both."""
    from alembic import command
    from sqlalchemy import inspect

    url = fresh_database_url(tmp_path)
    upgrade(url, "0014")
    engine = make_engine(url)
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("bot_attempts")}
        assert {
            "reported_exit_code",
            "reported_reason",
            "reported_detail",
            "reported_at",
        } <= columns
        indexes = {i["name"] for i in inspect(engine).get_indexes("bot_attempts")}
        assert "ix_bot_attempts_exit_pending" in indexes
        command.downgrade(alembic_config(url), "0013")
        engine.dispose()
        columns = {c["name"] for c in inspect(engine).get_columns("bot_attempts")}
        assert not any(name.startswith("reported_") for name in columns)
        upgrade(url, "0014")
    finally:
        engine.dispose()


def test_kinds_upgrade_and_downgrade(tmp_path: Path) -> None:
    """0015 adds the kinds table and each bot's kind version (built-in bots get 1, a raw
    `module:Class` keeps NULL); its downgrade drops both."""
    from alembic import command
    from sqlalchemy import inspect

    url = fresh_database_url(tmp_path)
    upgrade(url, "0014")
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (id, name, max_concurrent_bots, created_at) "
                    "VALUES ('u1', 'old', 1, CURRENT_TIMESTAMP)"
                )
            )
            for bot_id, bot in (("b1", "demo"), ("b2", "mine.bots:Bot")):
                connection.execute(
                    text(
                        "INSERT INTO bots (id, user_id, status, attempt, orchestrator, bot, "
                        "config, config_version, labels, restart_max_retries, "
                        "restart_backoff_s, created_at, updated_at) VALUES (:id, 'u1', "
                        "'completed', 0, 'process', :bot, '{}', 1, '{}', 0, 5.0, "
                        "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    ),
                    {"id": bot_id, "bot": bot},
                )
        upgrade(url, "0015")
        assert "kinds" in inspect(engine).get_table_names()
        with engine.connect() as connection:
            versions = dict(connection.execute(text("SELECT id, kind_version FROM bots")).all())
        assert versions == {"b1": 1, "b2": None}
        command.downgrade(alembic_config(url), "0014")
        engine.dispose()
        assert "kinds" not in inspect(engine).get_table_names()
        assert "kind_version" not in {c["name"] for c in inspect(engine).get_columns("bots")}
        upgrade(url, "0015")
    finally:
        engine.dispose()

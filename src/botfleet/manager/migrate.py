"""Run Alembic migrations from code (the prestart step of `botfleet serve`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from botfleet.manager import migrations
from botfleet.manager.core.settings import Settings


def alembic_config(database_url: str, settings: Settings | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    # Migrations that seal data (0007) open the SecretBox from the same settings as the manager.
    config.attributes["settings"] = settings
    return config


def upgrade(database_url: str, revision: str = "head", *, settings: Settings | None = None) -> None:
    command.upgrade(alembic_config(database_url, settings), revision)

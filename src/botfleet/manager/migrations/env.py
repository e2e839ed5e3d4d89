"""Alembic environment: migrates the database named in the Alembic config or the settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from botfleet.manager.core import (
    kind_models,  # noqa: F401  (registers its table)
    operation_models,  # noqa: F401  (registers its tables)
    queue_models,  # noqa: F401  (registers its table and the bots' queue indexes)
    schedule_models,  # noqa: F401  (registers its tables)
    webhook_models,  # noqa: F401  (registers its tables)
)
from botfleet.manager.core.db import make_engine
from botfleet.manager.core.models import Base

config = context.config
target_metadata = Base.metadata

#: Any constant works; it only has to be the same for every replica running migrations.
MIGRATION_LOCK_ID = 0x626F74666C656574  # "botfleet"


def database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from botfleet.manager.core.settings import get_settings

    return get_settings().resolved_database_url()


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(database_url())
    with engine.connect() as connection:
        is_postgres = connection.dialect.name == "postgresql"
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=not is_postgres
        )
        with context.begin_transaction():
            if is_postgres:  # several replicas may start at once: one migrates, the rest wait
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID}
                )
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

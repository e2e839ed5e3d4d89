"""Engine and session factory, built in the app's lifespan (never at import)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

#: Connections kept, and how many more may open under load, when the caller names none (the
#: manager passes BOTFLEET_DB_POOL_SIZE and _OVERFLOW). Requests are admitted `pool_size` at a
#: time (manager/http/admission.py); the overflow serves launches and loops.
POOL_SIZE = 20
POOL_OVERFLOW = 20

#: Execution option that marks a transaction as one that will write (see `make_engine`).
WRITE_OPTION = "botfleet_writes"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for PostgreSQL (psycopg 3) or SQLite.

    SQLite gets WAL, and `BEGIN IMMEDIATE` for write transactions (those opened by
    `transaction()`): writers queue on the database lock at the start instead of failing halfway,
    which is what serializes the concurrency limit and row updates there (PostgreSQL uses row
    locks instead). Read-only sessions begin deferred and never block a writer.
    """
    # The same pool on both: admission counts on `pool_size` places (SQLite's own default
    # pool, 5 + 10, is smaller than the places admitted).
    if make_url(url).database not in (None, "", ":memory:"):
        kwargs.setdefault("pool_size", POOL_SIZE)
        kwargs.setdefault("max_overflow", POOL_OVERFLOW)
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # let SQLAlchemy emit BEGIN itself
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            writes = connection.get_execution_options().get(WRITE_OPTION, False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _private_sqlite_file(url: str) -> None:
    """Create the SQLite file readable by its owner only (0600), and tighten an older one.

    It holds API key hashes and sealed secrets; SQLite gives its -wal and -shm files the mode of
    the main file, so they follow.
    """
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.is_dir():
        return  # SQLite itself reports the missing folder, with its own message
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if name.exists() and name.stat().st_mode & 0o077:
            name.chmod(0o600)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work that writes: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        session.connection(execution_options={WRITE_OPTION: True})
        yield session

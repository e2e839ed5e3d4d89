"""The database half of `botfleet backup` / `restore` (manager/backup.py): which kind it is,
its Alembic revision against this code's, and a consistent copy out of SQLite or PostgreSQL
while managers serve, and back in."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, create_engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

#: libpq reads these from the environment; the URL's query may name them.
PG_QUERY_ENV = {
    "host": "PGHOST",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
}


class BackupError(Exception):
    """What stopped a backup or a restore, worded for the operator; nothing was changed unless
    the message says so."""


def database_kind(url: str) -> str:
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise BackupError(f"cannot back up a {backend} database (SQLite or PostgreSQL only)")
    return backend


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError(f"the SQLite database {database!r} is not a file this can copy")
    return Path(database)


def where(url: str) -> str:
    """The database named for the operator, never with its password."""
    parts = make_url(url)
    if parts.get_backend_name() == "sqlite":
        return str(parts.database)
    return parts.render_as_string(hide_password=True)


def _script() -> Any:
    from alembic.script import ScriptDirectory

    from botfleet.manager.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def code_head() -> str:
    return str(_script().get_current_head())


def known_revision(revision: str) -> bool:
    try:
        return _script().get_revision(revision) is not None
    except Exception:  # alembic's ResolutionError / CommandError: a revision this code lacks
        return False


def database_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def table_names(url: str) -> list[str]:
    """The database's tables ([] for a SQLite file that does not exist yet: none is made)."""
    if database_kind(url) == "sqlite" and not sqlite_path(url).exists():
        return []
    engine = create_engine(url)
    try:
        return list(inspect(engine).get_table_names())
    except SQLAlchemyError as exc:
        raise BackupError(
            f"cannot read the database {where(url)} (create it first): {exc}"
        ) from exc
    finally:
        engine.dispose()


def drop_tables(url: str) -> None:
    engine = create_engine(url)
    try:
        tables = MetaData()
        tables.reflect(engine)
        tables.drop_all(engine)
    finally:
        engine.dispose()


def sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy while writers go on: one step of SQLite's online backup holds a read
    snapshot for the whole copy (WAL lets the manager keep writing meanwhile). Into an existing
    file, it replaces the whole content, -wal included."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o600))
    src, dst = sqlite3.connect(source, timeout=30), sqlite3.connect(target, timeout=30)
    try:
        src.backup(dst)
    except sqlite3.Error as exc:
        raise BackupError(f"could not copy {source} to {target}: {exc}") from exc
    finally:
        src.close()
        dst.close()


def pg_dump(url: str, file: Path) -> None:
    """The custom format: compressed, and pg_restore can restore it in one transaction."""
    _pg_run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", "-f", str(file)], url)


def pg_restore(url: str, file: Path) -> None:
    """All or nothing (one transaction), owned by the URL's user whoever owned the original.
    The database is named by --dbname alone (a name, no credentials)."""
    database = make_url(url).database or ""
    command = ["pg_restore", "--no-owner", "--no-privileges", "--single-transaction"]
    _pg_run([*command, "--exit-on-error", "--dbname", database, str(file)], url)


def _pg_run(command: list[str], url: str) -> None:
    """pg_dump or pg_restore, the URL's parts (password included) passed by environment: a
    command line is visible to every user of the machine."""
    if shutil.which(command[0]) is None:
        raise BackupError(
            f"{command[0]} is not on PATH: install the PostgreSQL client tools "
            "(the server's major version or newer)"
        )
    parts = make_url(url)
    env = dict(os.environ)
    for var, value in (
        ("PGHOST", parts.host),
        ("PGPORT", parts.port),
        ("PGUSER", parts.username),
        ("PGPASSWORD", parts.password),
        ("PGDATABASE", parts.database),
    ):
        if value is not None:
            env[var] = str(value)
    for name, given in parts.query.items():
        if name in PG_QUERY_ENV:
            env[PG_QUERY_ENV[name]] = given if isinstance(given, str) else given[0]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BackupError(f"{command[0]} failed: {done.stderr.strip()}")

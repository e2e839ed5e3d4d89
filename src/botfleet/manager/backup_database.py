"""The database half of `botfleet backup` / `restore` (manager/backup.py): which kind it is,
its Alembic revision against this code's, and a consistent copy out of SQLite or PostgreSQL
while managers serve, and back in."""

from __future__ import annotations

import os
import re
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


def pg_dump(url: str, file: Path) -> int | None:
    """The custom format: compressed, and pg_restore can restore it in one transaction. Returns
    pg_dump's major version (the manifest keeps it: an older pg_restore cannot read the file).

    A pg_dump older than the server refuses it ("server version mismatch"): checked first, so
    the operator is told which client to install."""
    server = server_major(url)
    client = None if server is None else client_major("pg_dump", server)
    if client is not None and server is not None and client < server:
        raise BackupError(mismatch("pg_dump", client, server))
    command = ["pg_dump", "--format=custom", "--no-owner", "--no-privileges", "-f", str(file)]
    _pg_run(command, url)
    return client


def pg_restore_ready(dumped_by: object) -> None:
    """Before anything is dropped: pg_restore is there and can read the archive (the archive
    format of a newer pg_dump is unknown to an older pg_restore)."""
    need = dumped_by if isinstance(dumped_by, int) else None
    client = client_major("pg_restore", need)
    if need is not None and client < need:
        raise BackupError(
            f"pg_restore {client} cannot read an archive pg_dump {need} made: install the "
            f"PostgreSQL client tools {need} or newer ({_install(need)}); nothing was changed"
        )


def pg_restore(url: str, file: Path) -> None:
    """All or nothing (one transaction), owned by the URL's user whoever owned the original.
    The database is named by --dbname alone (a name, no credentials)."""
    database = make_url(url).database or ""
    command = ["pg_restore", "--no-owner", "--no-privileges", "--single-transaction"]
    _pg_run([*command, "--exit-on-error", "--dbname", database, str(file)], url)


def server_major(url: str) -> int | None:
    """None when the server cannot be asked: pg_dump then says why itself."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            version = connection.dialect.server_version_info
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()
    return int(version[0]) if version else None


def client_major(tool: str, server: int | None) -> int:
    """The major version of `tool` on PATH; a missing tool is named with what to install."""
    _on_path(tool, server)
    try:
        done = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackupError(f"{tool} --version failed: {exc}") from exc
    found = re.search(r"\(PostgreSQL\)\s+(\d+)", done.stdout)
    if done.returncode != 0 or found is None:
        raise BackupError(f"{tool} --version said {(done.stdout + done.stderr).strip()!r}")
    return int(found.group(1))


def _on_path(tool: str, server: int | None) -> None:
    if shutil.which(tool) is None:
        version = f", version {server} or newer ({_install(server)})" if server else ""
        raise BackupError(
            f"{tool} is not on PATH: install the PostgreSQL client tools{version}. The "
            "botfleet-manager image has them once rebuilt (scripts/build-images.sh). Nothing "
            "was written or changed"
        )


def mismatch(tool: str, client: int | str, server: int | str) -> str:
    return (
        f"server version mismatch: {tool} {client} cannot dump a PostgreSQL {server} server "
        f"({tool} must be the server's major version or newer): install the PostgreSQL client "
        f"tools {server} or newer ({_install(server)}); nothing was written"
    )


def _install(major: int | str) -> str:
    return (
        f"Debian and Ubuntu: postgresql-client-{major} from the distribution if it has it, "
        "else from apt.postgresql.org"
    )


def _pg_run(command: list[str], url: str) -> None:
    """pg_dump or pg_restore, the URL's parts (password included) passed by environment: a
    command line is visible to every user of the machine."""
    _on_path(command[0], None)
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
    if done.returncode == 0:
        return
    said = done.stderr.strip()
    version = re.search(r"server version: (\d+).*?version: (\d+)", said, re.DOTALL)
    if "server version mismatch" in said and version:  # what the check above did not foresee
        raise BackupError(mismatch(command[0], version.group(2), version.group(1)))
    raise BackupError(f"{command[0]} failed: {said}")

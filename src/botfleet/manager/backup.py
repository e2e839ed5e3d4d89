"""`botfleet backup` / `botfleet restore`: the database and the secrets keys in one archive.

They go together because every bot's secrets and every webhook signing secret are sealed with
the keys (core/sealing.py): a database restored without them holds secrets nobody can open.
Keys given in BOTFLEET_SECRETS_KEYS live outside the data folder, so no archive can hold them;
the manifest names them by fingerprint and the operator is told to keep them alongside.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from botfleet.manager.backup_database import (
    BackupError,
    code_head,
    database_kind,
    database_revision,
    drop_tables,
    known_revision,
    pg_dump,
    pg_restore,
    pg_restore_ready,
    sqlite_copy,
    sqlite_path,
    table_names,
    where,
)
from botfleet.manager.core.sealing import SecretBox, SecretsUnreadable
from botfleet.manager.core.settings import Settings

__all__ = ["BackupError", "Report", "restore_backup", "write_backup"]

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_MEMBER = "database/botfleet.db"
PG_MEMBER = "database/botfleet.pgdump"
#: Data-folder secrets kept with the database: the sealing key, and the admin token and
#: bootstrap key a restored manager would otherwise replace with new ones.
DATA_FILES = ("secrets.key", "admin_token", "bootstrap_key")


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failed: bool = False


# ---- what the keys and the schema are ----------------------------------------------------------


def fingerprint(key: str) -> str:
    """A name for a key that reveals nothing of it (the manifest never holds a key)."""
    return "sha256:" + hashlib.sha256(key.strip().encode()).hexdigest()[:16]


def env_keys(settings: Settings) -> list[str]:
    return [k.strip() for k in (settings.secrets_keys or "").split(",") if k.strip()]


def configured_box(settings: Settings) -> SecretBox | None:
    """The keys a manager on these settings would use, without generating a key file as
    `load_box` does (a new key opens nothing that was sealed before)."""
    keys = _keys(settings)
    return SecretBox(keys) if keys else None


def _keys(settings: Settings) -> list[str]:
    key_file = settings.data_dir / "secrets.key"
    if env_keys(settings) or not key_file.exists():
        return env_keys(settings)
    return [key_file.read_text().strip()]


# ---- backup -----------------------------------------------------------------------------------


def write_backup(settings: Settings, dest: Path) -> Report:
    """One archive (0600) with the database, the data folder's secrets and a manifest; safe
    while managers serve (SQLite: the online backup API; PostgreSQL: pg_dump's snapshot)."""
    url = settings.resolved_database_url()
    kind = database_kind(url)
    if dest.is_dir():
        dest = dest / f"botfleet-backup-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.tar.gz"
    if dest.exists():
        raise BackupError(f"{dest} exists: a backup never replaces another, name a new file")
    if not dest.parent.is_dir():
        raise BackupError(f"no folder {dest.parent} to write the archive in")
    report, dumped_by = Report(), None
    with tempfile.TemporaryDirectory(prefix="botfleet-backup-") as work:
        if kind == "sqlite":
            source = sqlite_path(url)
            if not source.exists():
                raise BackupError(f"no database at {source}: nothing to back up")
            member, copy = SQLITE_MEMBER, Path(work) / "botfleet.db"
            sqlite_copy(source, copy)
            revision = database_revision(f"sqlite:///{copy}")
        else:
            member, copy = PG_MEMBER, Path(work) / "botfleet.pgdump"
            revision = database_revision(url)
            dumped_by = pg_dump(url, copy)
            if database_revision(url) != revision:
                raise BackupError("a migration ran during the backup: run it again")
        files = [name for name in DATA_FILES if (settings.data_dir / name).is_file()]
        manifest = {
            "format": FORMAT,
            "botfleet_version": _version(),
            "alembic_revision": revision,
            "database": kind,
            "database_member": member,
            "pg_dump_version": dumped_by,  # pg_restore must be as new (PostgreSQL only)
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "data_files": files,
            "keys": _key_fingerprints(settings),
        }
        partial = dest.with_name(f".{dest.name}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w:gz") as tar:
                _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2).encode())
                _add_file(tar, member, copy)
                for name in files:
                    _add_file(tar, f"data/{name}", settings.data_dir / name)
            partial.replace(dest)
        finally:
            partial.unlink(missing_ok=True)
    report.lines.append(
        f"wrote {dest}: the {kind} database at revision {revision or '(none)'}"
        + (f", and {', '.join(files)} from {settings.data_dir}" if files else "")
    )
    if keys := env_keys(settings):
        prints = ", ".join(fingerprint(k) for k in keys)
        report.warnings.append(
            "the secrets keys come from BOTFLEET_SECRETS_KEYS, so this archive does not hold "
            f"them ({prints}): keep them alongside it, in your secret store. Without them every "
            "bot secret and webhook signing secret in the archive is lost."
        )
    elif "secrets.key" not in files:
        report.lines.append("no secrets key exists yet: nothing has been sealed")
    return report


def _key_fingerprints(settings: Settings) -> list[dict[str, Any]]:
    keys = [
        {"source": "BOTFLEET_SECRETS_KEYS", "fingerprint": fingerprint(k), "in_archive": False}
        for k in env_keys(settings)
    ]
    key_file = settings.data_dir / "secrets.key"
    if key_file.is_file():
        keys.append(
            {
                "source": "secrets.key",
                "fingerprint": fingerprint(key_file.read_text()),
                "in_archive": True,
                "in_use": not keys,
            }
        )
    return keys


def _version() -> str:
    try:
        return metadata.version("botfleet-server")
    except metadata.PackageNotFoundError:
        return "unknown"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(datetime.now(UTC).timestamp())
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    """Streamed (a database may be larger than memory), owned by nobody in particular."""
    info = tar.gettarinfo(path, arcname=name)
    info.mode, info.uid, info.gid, info.uname, info.gname = 0o600, 0, 0, "", ""
    with path.open("rb") as content:
        tar.addfile(info, content)


# ---- restore ----------------------------------------------------------------------------------


def restore_backup(settings: Settings, archive: Path, *, force: bool, migrate: bool) -> Report:
    """The archive's database and data-folder secrets put back, the schema brought up to this
    code's, and the sealed secrets probed with the keys a manager here would use.

    Everything is checked before anything changes: the archive, its revision (one newer than
    this code is refused), and the target database (one with tables needs `force`)."""
    url = settings.resolved_database_url()
    kind = database_kind(url)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="botfleet-restore-") as work:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                manifest, files, tables = _checked(tar, archive, url, kind, force=force)
                copy = _extract(tar, str(manifest["database_member"]), Path(work) / "database")
                contents = {name: _member(tar, f"data/{name}").read() for name in files}
        except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
            raise BackupError(f"cannot read {archive}: {exc}; nothing was changed") from exc
        if kind == "sqlite":
            sqlite_copy(copy, sqlite_path(url))
        else:
            if tables:
                drop_tables(url)
            try:
                pg_restore(url, copy)  # one transaction: on failure, the database stays empty
            except BackupError as exc:
                raise BackupError(f"{exc}; the database is empty now: restore again") from exc
    revision = manifest.get("alembic_revision")
    report.lines.append(
        f"restored the {kind} database {where(url)} at revision {revision or '(none)'} "
        f"from {archive} (made {manifest.get('created_at')} by botfleet "
        f"{manifest.get('botfleet_version')})"
    )
    for name, content in contents.items():
        report.lines.append(_put_data_file(settings.data_dir / name, content))
    _bring_up_to_date(settings, url, revision, migrate=migrate, report=report)
    _probe(settings, url, manifest, report)
    return report


def _checked(
    tar: tarfile.TarFile, archive: Path, url: str, kind: str, *, force: bool
) -> tuple[dict[str, Any], list[str], list[str]]:
    """The manifest, the data files to restore, and the target's tables, once the archive
    fits this code and the target may be written."""
    manifest = _manifest(tar, archive)
    revision = manifest.get("alembic_revision")
    if manifest.get("database") != kind:
        raise BackupError(
            f"the archive holds a {manifest.get('database')} database and this manager uses "
            f"{kind} (BOTFLEET_DATABASE_URL): restore into the same kind; nothing was changed"
        )
    if revision and not known_revision(str(revision)):
        raise BackupError(
            f"the archive's database is at revision {revision}, newer than this botfleet knows "
            f"(its newest is {code_head()}): restore it with botfleet "
            f"{manifest.get('botfleet_version', '?')} or newer (downgrades are not supported); "
            "nothing was changed"
        )
    tables = table_names(url)
    if tables and not force:
        raise BackupError(
            f"the database {where(url)} is not empty ({len(tables)} tables): nothing was "
            "changed; stop its managers and pass --force to replace it"
        )
    if kind == "postgresql":
        pg_restore_ready(manifest.get("pg_dump_version"))
    files = [name for name in manifest.get("data_files", []) if name in DATA_FILES]
    return manifest, files, tables


def _manifest(tar: tarfile.TarFile, archive: Path) -> dict[str, Any]:
    try:
        manifest = dict(json.loads(_member(tar, MANIFEST).read()))
    except (BackupError, ValueError, TypeError) as exc:
        raise BackupError(f"{archive} is not a botfleet backup ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise BackupError(
            f"{archive} has format {manifest.get('format')}; this botfleet reads {FORMAT}"
        )
    return manifest


def _member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    handle = tar.extractfile(name) if name in tar.getnames() else None
    if handle is None:
        raise BackupError(f"the archive has no {name}")
    return handle


def _extract(tar: tarfile.TarFile, name: str, target: Path) -> Path:
    """One named member copied out (never `extractall`: an archive's paths are not trusted)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(_member(tar, name), out)
    return target


def _put_data_file(path: Path, content: bytes) -> str:
    """Write one data-folder secret (0600); a different one already there is kept aside."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    note = f"restored {path}"
    if path.exists() and path.read_bytes() != content:
        aside = path.with_name(f"{path.name}.replaced-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
        path.replace(aside)
        note += f" (the one it replaced is kept as {aside.name})"
    partial = path.with_name(f".{path.name}.restoring")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    partial.replace(path)
    return note


def _bring_up_to_date(
    settings: Settings, url: str, revision: str | None, *, migrate: bool, report: Report
) -> None:
    head = code_head()
    if revision == head:
        return
    if not migrate:
        report.warnings.append(
            f"the database is at revision {revision or '(none)'} and this botfleet's is {head}: "
            "run `botfleet migrate` (or start the manager: it migrates unless "
            "BOTFLEET_MIGRATE_ON_START=false)"
        )
        return
    from botfleet.manager.migrate import upgrade

    try:
        upgrade(url, settings=settings)
    except Exception as exc:
        raise BackupError(
            f"restored at revision {revision}, but migrating to {head} failed: {exc}; "
            "fix the cause and run `botfleet migrate`"
        ) from exc
    report.lines.append(
        f"migrated the database from revision {revision or '(none)'} to {head} "
        "(what `botfleet migrate` does)"
    )


#: Every sealed value, by what it is (columns a database not yet migrated may lack are skipped).
SEALED_QUERIES = {
    "bot secrets": "SELECT secrets_sealed FROM bots WHERE secrets_sealed IS NOT NULL",
    "webhook signing secrets": "SELECT secret_sealed FROM webhook_endpoints",
    "webhook custom headers": (
        "SELECT headers_sealed FROM webhook_endpoints WHERE headers_sealed IS NOT NULL"
    ),
}


def _probe(settings: Settings, url: str, manifest: dict[str, Any], report: Report) -> None:
    """Open every sealed value with the keys a manager here would use: a restore that cannot
    is reported as failed, while the keys kept with the backup can still be found."""
    box = configured_box(settings)
    engine = create_engine(url)
    counts: list[str] = []
    closed = total = 0
    try:
        for what, query in SEALED_QUERIES.items():
            try:
                with engine.connect() as connection:
                    values = list(connection.execute(text(query)).scalars())
            except SQLAlchemyError:
                continue
            opened = sum(_opens(box, value) for value in values)
            total += len(values)
            closed += len(values) - opened
            counts.append(f"{opened} of {len(values)} {what}")
    finally:
        engine.dispose()
    if not total:
        report.lines.append("no sealed secrets in the database: nothing to check")
        return
    if not closed:
        report.lines.append(f"the secrets keys open every sealed secret ({', '.join(counts)})")
        return
    report.failed = True
    configured = ", ".join(fingerprint(key) for key in _keys(settings)) or "none"
    made_with = (
        ", ".join(f"{k['fingerprint']} ({k['source']})" for k in manifest.get("keys", []))
        or "no key"
    )
    report.warnings.append(
        f"{closed} sealed secrets do not open with the configured keys (opened "
        f"{', '.join(counts)}); the configured keys: {configured}; the backup was made "
        f"with {made_with}. Set "
        "BOTFLEET_SECRETS_KEYS to the keys kept with the backup before starting the manager, "
        "or those secrets are lost."
    )


def _opens(box: SecretBox | None, sealed: str) -> bool:
    try:
        return box is not None and isinstance(box.open_text(sealed), str)
    except SecretsUnreadable:
        return False

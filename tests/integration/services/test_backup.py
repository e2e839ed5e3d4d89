"""`botfleet backup` / `botfleet restore` on the database under test (PostgreSQL, and SQLite in
the second run): one archive holds the database and the secrets key, taken while the manager
serves; a manager on the restored state knows the user's key, lists the bot, and opens the
sealed secrets (the relaunched bot receives them, webhook deliveries are signed with the old
secret). A restore over a database with tables is refused without --force and changes nothing;
an archive from a newer schema is refused; an older one is migrated."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

from botfleet.manager.backup_database import code_head, database_revision, pg_dump, table_names
from botfleet.manager.core.settings import Settings
from botfleet.manager.core.webhook_signing import verify
from botfleet.manager.migrate import upgrade
from tests.listeners import Receiver
from tests.support import (
    REPO,
    SPY_RUNTIME_ENV,
    RedisServer,
    database_kind,
    drop_database,
    fresh_database_url,
    running_manager,
    runtime_env,
    user_env,
    wait_for_status,
    wait_until,
)

MANAGER_ENV = {
    **SPY_RUNTIME_ENV,  # the relaunched bot's runtime keeps a copy of the secrets it received
    "BOTFLEET_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver listens on loopback
    "BOTFLEET_WEBHOOK_INTERVAL_S": "0.2",
}
SECRETS = {"api_key": "s3cret-for-the-backup"}


def botfleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The manager's own command, as an operator runs it; its report, on one line per line."""
    done = subprocess.run(
        [sys.executable, "-m", "botfleet.manager", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    done.stderr = "\n".join(" ".join(line.split()) for line in done.stderr.splitlines())
    return done


@dataclass
class Backup:
    archive: Path
    api_key: str
    user_name: str
    bot_id: str
    hook_secret: str
    sealing_key: str


@pytest.fixture(scope="module")
def backup(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, receiver: Receiver
) -> Backup:
    """A user, an ended bot with secrets and a webhook with its sealed secret, backed up while
    the manager serves; the manager and its database are gone afterwards."""
    root = tmp_path_factory.mktemp("backed-up")
    with running_manager(root, redis_server.url, extra_env=MANAGER_ENV) as old:
        user, client = old.new_user()
        hook = client.put("/webhook", json={"url": receiver.url("/restored")})
        assert hook.status_code == 201, hook.text
        created = client.post("/bots", json={"bot": "demo", "config": {}, "secrets": SECRETS})
        assert created.status_code == 201, created.text
        bot_id = created.json()["id"]
        wait_for_status(client, bot_id, {"active"})
        assert client.post(f"/bots/{bot_id}/stop").status_code == 202
        wait_for_status(client, bot_id, {"completed"})
        done = botfleet(old.env(), "backup", str(root))
        assert done.returncode == 0, done.stderr
        [archive] = root.glob("botfleet-backup-*.tar.gz")
        assert f"wrote {archive}: the {database_kind()} database" in done.stderr
        key = (old.data_dir / "secrets.key").read_text().strip()
    return Backup(archive, user["api_key"], user["name"], bot_id, hook.json()["secret"], key)


def read_archive(archive: Path) -> tuple[dict[str, Any], list[str]]:
    with tarfile.open(archive) as tar:
        manifest_file = tar.extractfile("manifest.json")
        assert manifest_file is not None
        return json.loads(manifest_file.read()), tar.getnames()


def test_the_archive_holds_the_database_and_the_key(backup: Backup) -> None:
    assert backup.archive.stat().st_mode & 0o777 == 0o600
    manifest, names = read_archive(backup.archive)
    assert manifest["database"] == database_kind()
    member = {"sqlite": "database/botfleet.db", "postgresql": "database/botfleet.pgdump"}
    assert manifest["database_member"] == member[database_kind()] in names
    assert "data/secrets.key" in names and manifest["data_files"] == ["secrets.key"]
    assert manifest["alembic_revision"] == code_head()
    assert manifest["botfleet_version"] and manifest["created_at"]
    [key] = manifest["keys"]
    assert key["source"] == "secrets.key" and key["fingerprint"].startswith("sha256:")
    assert backup.sealing_key not in json.dumps(manifest), "the manifest never holds a key"


def test_a_manager_on_the_restored_state_opens_the_secrets(
    tmp_path: Path, redis_server: RedisServer, receiver: Receiver, backup: Backup
) -> None:
    with running_manager(tmp_path, redis_server.url, start=False, extra_env=MANAGER_ENV) as new:
        done = botfleet(new.env(), "restore", str(backup.archive))
        assert done.returncode == 0, done.stderr
        assert "the secrets keys open every sealed secret (1 of 1 bot secrets" in done.stderr
        assert (new.data_dir / "secrets.key").read_text().strip() == backup.sealing_key
        assert (new.data_dir / "secrets.key").stat().st_mode & 0o777 == 0o600
        new.start()
        client = httpx.Client(
            base_url=new.url, headers={"Authorization": f"Bearer {backup.api_key}"}, timeout=30
        )
        with client:
            listed = client.get("/bots").json()["items"]
            assert [bot["id"] for bot in listed] == [backup.bot_id]
            relaunched = client.post(f"/bots/{backup.bot_id}/relaunch")
            assert relaunched.status_code == 201, relaunched.text
            again = wait_for_status(client, relaunched.json()["id"], {"active"})
            received = runtime_env(again["runtime_ref"])
            assert json.loads(received["BOTFLEET_BOT_SECRETS"]) == SECRETS
            # The webhook's sealed signing secret opens too: the new bot's deliveries are
            # signed with the secret the endpoint was given before the backup.
            ours = wait_until(
                lambda: [
                    r
                    for r in receiver.got("/restored")
                    if json.loads(r["body"])["data"].get("bot_id") == again["id"]
                ],
                timeout=30,
                what="a delivery about the relaunched bot",
            )
            verify(backup.hook_secret, ours[0]["headers"], ours[0]["body"])
            assert client.post(f"/bots/{again['id']}/stop").status_code == 202
            wait_for_status(client, again["id"], {"completed"})


def user_names(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return sorted(connection.execute(text("SELECT name FROM users")).scalars())
    finally:
        engine.dispose()


def test_a_database_with_tables_is_replaced_only_with_force(
    tmp_path: Path, redis_server: RedisServer, backup: Backup
) -> None:
    with running_manager(tmp_path, redis_server.url, extra_env=MANAGER_ENV) as other:
        other.new_user()
        other.stop()
        before = user_names(other.database_url)
        key_file = other.data_dir / "secrets.key"
        key_file.write_text(Fernet.generate_key().decode() + "\n")
        own_key = key_file.read_text()

        refused = botfleet(other.env(), "restore", str(backup.archive))
        assert refused.returncode == 1
        assert "is not empty" in refused.stderr and "--force" in refused.stderr, refused.stderr
        assert "nothing was changed" in refused.stderr
        assert user_names(other.database_url) == before
        assert key_file.read_text() == own_key

        forced = botfleet(other.env(), "restore", "--force", str(backup.archive))
        assert forced.returncode == 0, forced.stderr
        assert user_names(other.database_url) == [backup.user_name]
        assert key_file.read_text().strip() == backup.sealing_key
        [kept] = other.data_dir.glob("secrets.key.replaced-*")
        assert kept.read_text() == own_key, "the key it replaced is kept aside"


def test_keys_that_do_not_open_the_secrets_fail_the_restore(
    tmp_path: Path, redis_server: RedisServer, backup: Backup
) -> None:
    """Keys in BOTFLEET_SECRETS_KEYS win over the restored key file: other keys there are the
    operator's mistake, reported while the keys kept with the backup can still be found."""
    wrong = {"BOTFLEET_SECRETS_KEYS": Fernet.generate_key().decode()}
    with running_manager(tmp_path, redis_server.url, start=False, extra_env=wrong) as new:
        done = botfleet(new.env(), "restore", str(backup.archive))
        assert done.returncode == 1
        assert "2 sealed secrets do not open with the configured keys" in done.stderr
        assert "Set BOTFLEET_SECRETS_KEYS to the keys kept with the backup" in done.stderr


def test_an_archive_from_a_newer_schema_is_refused(tmp_path: Path, backup: Backup) -> None:
    manifest, _ = read_archive(backup.archive)
    future = tmp_path / "future.tar.gz"
    with tarfile.open(backup.archive) as source, tarfile.open(future, "w:gz") as target:
        for member in source.getmembers():
            content = source.extractfile(member)
            assert content is not None
            data = content.read()
            if member.name == "manifest.json":
                data = json.dumps({**manifest, "alembic_revision": "9999_from_the_future"}).encode()
                member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    url, data_dir = fresh_database_url(tmp_path), tmp_path / "data"
    env = user_env(BOTFLEET_DATABASE_URL=url, BOTFLEET_DATA_DIR=str(data_dir))
    try:
        done = botfleet(env, "restore", str(future))
        assert done.returncode == 1
        assert "at revision 9999_from_the_future, newer than this botfleet knows" in done.stderr
        assert "nothing was changed" in done.stderr
        assert table_names(url) == [] and not (data_dir / "secrets.key").exists()
    finally:
        drop_database(url)


def test_an_older_archive_is_migrated_and_env_keys_are_named(tmp_path: Path) -> None:
    """Keys from the environment cannot be in the archive: the backup says to keep them."""
    key = Fernet.generate_key().decode()
    source, target = fresh_database_url(tmp_path), fresh_database_url(tmp_path)
    upgrade(source, "0014", settings=Settings(secrets_keys=key, data_dir=tmp_path / "old"))
    env = user_env(BOTFLEET_SECRETS_KEYS=key, BOTFLEET_DATA_DIR=str(tmp_path / "old"))
    try:
        done = botfleet({**env, "BOTFLEET_DATABASE_URL": source}, "backup", str(tmp_path / "b.tgz"))
        assert done.returncode == 0, done.stderr
        assert "this archive does not hold them" in done.stderr and "keep them" in done.stderr
        manifest, names = read_archive(tmp_path / "b.tgz")
        assert not [name for name in names if name.startswith("data/")]
        assert manifest["alembic_revision"] == "0014"
        assert [k["source"] for k in manifest["keys"]] == ["BOTFLEET_SECRETS_KEYS"]

        env.update(BOTFLEET_DATA_DIR=str(tmp_path / "new"), BOTFLEET_DATABASE_URL=target)
        restored = botfleet(env, "restore", str(tmp_path / "b.tgz"))
        assert restored.returncode == 0, restored.stderr
        assert f"migrated the database from revision 0014 to {code_head()}" in restored.stderr
        assert database_revision(target) == code_head()
    finally:
        drop_database(source)
        drop_database(target)


def test_pg_dump_gets_the_credentials_by_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command line is readable by every local user (ps, /proc): the password never goes
    there. A stand-in pg_dump records what it was given."""
    seen = tmp_path / "seen.json"
    stand_in = tmp_path / "bin" / "pg_dump"
    stand_in.parent.mkdir()
    stand_in.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"json.dump({{'argv': sys.argv, 'env': dict(os.environ)}}, open({str(seen)!r}, 'w'))\n"
    )
    stand_in.chmod(0o700)
    monkeypatch.setenv("PATH", f"{stand_in.parent}:{os.environ['PATH']}")
    url = "postgresql+psycopg://fleet:pa%40ss%20word@db.internal:6543/botfleet?sslmode=require"
    pg_dump(url, tmp_path / "out.pgdump")
    got = json.loads(seen.read_text())
    assert "pa@ss word" not in " ".join(got["argv"]) and "fleet" not in " ".join(got["argv"])
    env = got["env"]
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"]) == ("db.internal", "6543", "fleet")
    assert (env["PGPASSWORD"], env["PGDATABASE"]) == ("pa@ss word", "botfleet")
    assert env["PGSSLMODE"] == "require"
    assert got["argv"][1:] == [
        "--format=custom",
        "--no-owner",
        "--no-privileges",
        "-f",
        str(tmp_path / "out.pgdump"),
    ]

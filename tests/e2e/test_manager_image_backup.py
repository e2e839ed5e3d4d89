"""`botfleet backup` and `botfleet restore` inside the manager image (botfleet-manager, which
carries the PostgreSQL client), run as the compose how-to runs them: as root, the data folder
mounted at /data, the database named by BOTFLEET_DATABASE_URL. Here the container shares the
host's network and the test PostgreSQL stands for compose's (no postgres image can be pulled);
compose's own networking is not exercised.

A manager on the host makes a user and a bot with secrets; the image backs the database and the
data folder's key up while it serves; the image restores the archive, with --force, over a
database that has a table, into an empty data folder; the restored database holds the user and
the bot, and the restored key opens the bot's sealed secrets. A pg_dump that is missing or older
than the server stops the backup with an error naming the client to install, and writes
nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import date
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, text

from botfleet.manager.backup import BackupError, write_backup
from botfleet.manager.core.sealing import SecretBox
from botfleet.manager.core.settings import Settings
from tests.support import (
    RedisServer,
    database_kind,
    drop_database,
    fresh_database_url,
    running_manager,
    wait_for_status,
)

IMAGE = os.environ.get("BOTFLEET_MANAGER_IMAGE", "botfleet-manager:latest")
SECRETS = {"api_key": "sealed-in-the-image"}

pytestmark = pytest.mark.skipif(
    database_kind() != "postgresql", reason="the image's subject is pg_dump and pg_restore"
)


def in_image(
    env: dict[str, str], *args: str, mounts: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`botfleet ARGS` in a container of the image; the database URL reaches it by the docker
    client's environment (`-e NAME`), never its command line."""
    name = f"botfleet-backup-test-{uuid.uuid4().hex[:8]}"
    command = ["docker", "run", "--rm", "--name", name, "--network", "host", "--user", "0"]
    for mount in mounts:
        command += ["-v", mount]
    for var in env:
        command += ["-e", var]
    try:
        done = subprocess.run(
            [*command, IMAGE, "botfleet", *args],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=30)
        raise
    done.stderr = "\n".join(" ".join(line.split()) for line in done.stderr.splitlines())
    return done


def test_the_image_backs_up_and_restores_a_postgresql_installation(
    tmp_path: Path, redis_server: RedisServer, docker_engine: None
) -> None:
    archive_name = f"backup-{date.today():%Y-%m-%d}.tar.gz"
    with running_manager(tmp_path / "old", redis_server.url) as old:
        user, client = old.new_user()
        with client:
            created = client.post("/bots", json={"bot": "demo", "config": {}, "secrets": SECRETS})
            assert created.status_code == 201, created.text
            bot_id = created.json()["id"]
            wait_for_status(client, bot_id, {"active"})
            assert client.post(f"/bots/{bot_id}/stop").status_code == 202
            wait_for_status(client, bot_id, {"completed"})
        key = (old.data_dir / "secrets.key").read_text().strip()
        # docker compose exec manager botfleet backup /data/backup-<date>.tar.gz
        done = in_image(
            {"BOTFLEET_DATABASE_URL": old.database_url},
            "backup",
            f"/data/{archive_name}",
            mounts=(f"{old.data_dir}:/data",),
        )
        assert done.returncode == 0, done.stderr or done.stdout
        assert f"wrote /data/{archive_name}: the postgresql database" in done.stderr
        archive = old.data_dir / archive_name
        assert archive.stat().st_mode & 0o777 == 0o600
    # The source database is dropped by now: the restore has only the archive.

    target, restored = fresh_database_url(tmp_path), tmp_path / "restored"
    restored.mkdir()
    with psycopg.connect(target.replace("+psycopg", "")) as connection:
        connection.execute("CREATE TABLE leftover (x int)")
    try:
        # docker compose run --rm -v "$PWD:/backups:ro" manager botfleet restore --force ...
        done = in_image(
            {"BOTFLEET_DATABASE_URL": target},
            "restore",
            "--force",
            f"/backups/{archive_name}",
            mounts=(f"{restored}:/data", f"{archive.parent}:/backups:ro"),
        )
        assert done.returncode == 0, done.stderr or done.stdout
        assert "restored the postgresql database" in done.stderr
        assert "the secrets keys open every sealed secret (1 of 1 bot secrets" in done.stderr
        assert (restored / "secrets.key").read_text().strip() == key
        assert (restored / "secrets.key").stat().st_mode & 0o777 == 0o600
        engine = create_engine(target)
        try:
            with engine.connect() as connection:
                names = connection.execute(text("SELECT name FROM users")).scalars().all()
                bots = dict(connection.execute(text("SELECT id, secrets_sealed FROM bots")).all())
                tables = connection.execute(text("SELECT tablename FROM pg_tables")).scalars()
                assert "leftover" not in set(tables), "--force replaced the database"
        finally:
            engine.dispose()
        assert list(names) == [user["name"]]
        assert list(bots) == [bot_id]
        assert SecretBox([key]).open(bots[bot_id]) == SECRETS
    finally:
        drop_database(target)


@pytest.mark.parametrize("pg_dump_says", [None, "pg_dump (PostgreSQL) 9.6.24"])
def test_a_pg_dump_missing_or_older_than_the_server_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_dump_says: str | None
) -> None:
    """The real server, a PATH with no pg_dump or one older than any server here: the error
    names the client to install (the server's major or newer), and no archive is left."""
    tools = tmp_path / "bin"
    tools.mkdir()
    if pg_dump_says:
        stand_in = tools / "pg_dump"
        stand_in.write_text(f"#!{sys.executable}\nprint({pg_dump_says!r})\n")
        stand_in.chmod(0o700)
    monkeypatch.setenv("PATH", str(tools))
    url = fresh_database_url(tmp_path)
    with psycopg.connect(url.replace("+psycopg", "")) as connection:
        server = connection.info.server_version // 10000
    dest = tmp_path / "out"
    dest.mkdir()
    try:
        with pytest.raises(BackupError) as stopped:
            write_backup(Settings(database_url=url, data_dir=tmp_path / "data"), dest / "b.tgz")
    finally:
        drop_database(url)
    said = str(stopped.value)
    if pg_dump_says:
        assert said.startswith(
            f"server version mismatch: pg_dump 9 cannot dump a PostgreSQL {server}"
        )
    else:
        assert said.startswith("pg_dump is not on PATH: install the PostgreSQL client tools")
    assert f"{server} or newer" in said and f"postgresql-client-{server}" in said, said
    assert "nothing was written" in said.lower()
    assert list(dest.iterdir()) == [], "no archive, not even a partial one"

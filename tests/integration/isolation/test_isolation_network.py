"""Bots cannot reach the database over the host's network (issue 14): each test performs the
attack (a TCP connect to PostgreSQL from a bot's uid) and asserts it fails, and shows the same
connect succeeding for root, so the test fails when the firewall does not hold.

The rules are host-wide and shared by every manager on this machine (manager/bot_firewall.py);
tests remove only the rules they added for their own private ports.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from sqlalchemy.engine import make_url

from botfleet.manager.bot_firewall import CHAIN, Rule, apply_bot_firewall, install
from botfleet.manager.core.settings import Settings
from botfleet.orchestrators.process import ProcessOrchestratorConfig
from tests.support import (
    PG_ADMIN,
    Manager,
    RedisServer,
    running_manager,
    unused_port,
    wait_for_command,
    wait_for_status,
)

_CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), 2).close()\n"
    "except ConnectionRefusedError:\n"
    "    print('refused')\n"
    "else:\n"
    "    print('connected')\n"
)


def _connect_as(uid: int | None, host: str, port: int) -> str:
    """'connected' or 'refused': a TCP connect from a process running under `uid` (the system's
    python: the test's own interpreter may live where other uids cannot run it)."""
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    result = subprocess.run(
        [python, "-c", _CONNECT, host, str(port)],
        capture_output=True,
        text=True,
        timeout=30,
        user=uid,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _chain_rules(binary: str = "iptables") -> list[str]:
    out = subprocess.run([binary, "-w", "-S", CHAIN], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def _jumps(binary: str = "iptables") -> int:
    out = subprocess.run([binary, "-w", "-S", "OUTPUT"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines().count(f"-A OUTPUT -j {CHAIN}")


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server on a private port of every address of this host, accepting everything."""
    server = socket.create_server(("0.0.0.0", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    server.close()


@pytest.fixture
def own_rules() -> Iterator[list[Rule]]:
    """Rules a test adds for its private ports, deleted afterwards (only these)."""
    added: list[Rule] = []
    yield added
    for rule in added:
        binary = "iptables" if rule.family == 4 else "ip6tables"
        subprocess.run([binary, "-w", "-D", CHAIN, *rule.spec()], capture_output=True)


# ---- the attack from a real bot container --------------------------------------------------


@pytest.fixture(scope="module")
def docker_manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, docker_engine: None
) -> Iterator[Manager]:
    # `on`: a manager that cannot install the rules must not start, so this test cannot pass
    # on a host where the firewall silently stayed off.
    env = {"BOTFLEET_BOT_FIREWALL": "on"}
    root = tmp_path_factory.mktemp("firewall-docker")
    with running_manager(root, redis_server.url, backend="docker", extra_env=env) as manager:
        yield manager


def test_a_docker_bot_cannot_open_a_tcp_connection_to_postgresql(
    docker_manager: Manager,
) -> None:
    url = make_url(docker_manager.database_url)
    assert url.get_backend_name() == "postgresql", "this attack needs the PostgreSQL run"
    pg_host, pg_port = url.host or "127.0.0.1", url.port or 5432
    _, client = docker_manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {}}).json()
    active = wait_for_status(client, bot["id"], {"active"})

    engine = docker.from_env()
    try:
        container = engine.containers.get(active["runtime_ref"])
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        probe = ["/opt/botfleet/bin/python", "-c", _CONNECT, pg_host, str(pg_port)]
        as_bot = container.exec_run(probe)  # the container's own user, uid 10001
        as_root = container.exec_run(probe, user="0")
    finally:
        engine.close()

    assert (as_bot.exit_code, as_bot.output.decode().strip()) == (0, "refused")
    # The same connect from the same network namespace works for root: the bot's uid is what
    # the rule refuses, and PostgreSQL is there to be reached.
    assert (as_root.exit_code, as_root.output.decode().strip()) == (0, "connected")
    assert _connect_as(None, pg_host, pg_port) == "connected"

    # The bot still does its job: callbacks to the manager and commands over Redis.
    command = client.patch(f"/bots/{bot['id']}/config", json={"config": {"lang": "de"}}).json()
    assert wait_for_command(client, bot["id"], command["id"], {"acked"})["status"] == "acked"
    assert client.get(f"/bots/{bot['id']}").json()["status"] == "active"
    log = docker_manager.log_path.read_text()
    assert f"bot firewall: TCP reset in chain {CHAIN} for uid 10001 -> tcp this host:{pg_port}" in (
        log
    )
    client.post(f"/bots/{bot['id']}/stop")
    wait_for_status(client, bot["id"], {"completed", "failed"})


# ---- the rules themselves ------------------------------------------------------------------


def test_process_bots_uids_cannot_reach_postgresql() -> None:
    """The process backend's bots run under uids of its range: every one of them is refused."""
    pg = make_url(PG_ADMIN)
    pg_host, pg_port = pg.host or "127.0.0.1", pg.port or 5432
    settings = _settings(
        orchestrator="process", database_url=f"postgresql+psycopg://u:p@{pg_host}:{pg_port}/db"
    )
    config = ProcessOrchestratorConfig.from_manager(settings)
    first, last = config.uid_base, config.uid_base + config.uid_count - 1
    installed = apply_bot_firewall(settings.model_copy(update={"bot_firewall": "on"}))
    assert {(r.port, r.uids) for r in installed} == {(pg_port, f"{first}-{last}")}
    for uid in (first, last):
        assert _connect_as(uid, pg_host, pg_port) == "refused", uid
    assert _connect_as(last + 1, pg_host, pg_port) == "connected", "outside the range"
    assert _connect_as(None, pg_host, pg_port) == "connected"


def test_a_bot_uid_is_reset_only_once_the_rule_is_installed_and_root_is_not(
    listener: int, own_rules: list[Rule]
) -> None:
    rules = [Rule(4, listener, "10001")]
    addresses = ["127.0.0.1", *_own_addresses()]
    for address in addresses:
        assert _connect_as(10001, address, listener) == "connected", f"{address} before the rule"
    own_rules += install(rules)
    # Every address of this host is covered, not only loopback; root still connects.
    for address in addresses:
        assert _connect_as(10001, address, listener) == "refused", address
        assert _connect_as(None, address, listener) == "connected", address


def test_many_managers_installing_at_once_leave_one_rule_and_one_jump(
    own_rules: list[Rule],
) -> None:
    with unused_port() as port:
        _install_at_once(port, own_rules)


def _install_at_once(port: int, own_rules: list[Rule]) -> None:
    rules = [Rule(4, port, "10001-10002"), Rule(6, port, "10001-10002")]
    own_rules += rules
    errors: list[BaseException] = []

    def one_manager() -> None:
        try:
            install(rules)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one_manager) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for binary in ("iptables", "ip6tables"):
        mine = [line for line in _chain_rules(binary) if f"--dport {port} " in line]
        assert len(mine) == 1, mine
        assert _jumps(binary) == 1


def test_a_manager_never_removes_rules_others_rely_on(
    tmp_path: Path, redis_server: RedisServer, docker_engine: None, own_rules: list[Rule]
) -> None:
    """A second manager starting and stopping leaves the first one's rule in place."""
    with unused_port() as port:
        own_rules += [Rule(4, port, "10001"), Rule(6, port, "10001")]
        env = {"BOTFLEET_BOT_FIREWALL": "on", "BOTFLEET_BOT_BLOCKED_PORTS": f"[{port}]"}
        for n in range(2):
            root = tmp_path / str(n)
            with running_manager(root, redis_server.url, backend="docker", extra_env=env):
                pass
        mine = [line for line in _chain_rules() if f"--dport {port} " in line]
        assert len(mine) == 1, mine


def test_on_refuses_to_start_a_manager_that_cannot_install_the_rules(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # A PATH without iptables (it lives in /usr/sbin): what a host without it looks like.
    env = {
        "BOTFLEET_BOT_FIREWALL": "on",
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
    }
    with running_manager(
        tmp_path, redis_server.url, backend="docker", extra_env=env, start=False
    ) as manager:
        with pytest.raises(AssertionError, match="manager exited"):
            manager.start()
        assert "BOTFLEET_BOT_FIREWALL=on, but iptables is not installed" in manager.log_tail()


# ---- helpers -------------------------------------------------------------------------------


def _settings(**values: object) -> Settings:
    base: dict[str, object] = {
        "data_dir": Path("/tmp/botfleet-firewall-test"),
        "database_url": "postgresql+psycopg://botfleet:botfleet@127.0.0.1:5432/botfleet",
    }
    return Settings(**(base | values))  # type: ignore[arg-type]


def _own_addresses() -> list[str]:
    """This host's IPv4 addresses other than loopback (a bot could dial those too)."""
    if shutil.which("hostname") is None:
        return []
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    return [a for a in out if "." in a and not a.startswith("127.")]


def test_a_stale_rule_on_the_managers_own_port_is_removed_so_its_bots_call_back(
    tmp_path: Path, redis_server: RedisServer, own_rules: list[Rule]
) -> None:
    """Rules outlive their managers. One that once guarded a database on port P (a database
    behind a proxy that is gone) would reset every callback of a manager that now listens on
    P: its bots could never report `started`. Seen in the suite; the manager removes it."""
    with running_manager(tmp_path, redis_server.url, start=False) as manager:
        port = manager.port  # held for the manager (PortHold): the rule is on its own port
        own_rules += install([Rule(4, port, "200000-209999"), Rule(4, port, "10001")])
        manager.start()
        client = manager.new_user()[1]
        bot = client.post("/bots", json={"bot": "demo", "config": {}}).json()
        wait_for_status(client, bot["id"], {"active"}, timeout=60)
        assert not [line for line in _chain_rules() if f"--dport {port} " in line]
        assert "removed a stale rule that reset a port our bots need" in manager.log_tail(200)

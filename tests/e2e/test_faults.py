"""Fault injection: the fleet converges to the truth after crashes, lost messages and restarts.

Each test has one expected end state per bot, checked against what the engine says. The times
it takes to converge are printed at the end of the run (`fault figures`), never asserted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import docker
import httpx
import pytest

from tests.support import (
    Manager,
    RedisServer,
    database_kind,
    figure,
    running_manager,
    verdict,
    wait_for_command,
    wait_for_status,
    wait_until,
)

MANAGER_ENV = {"BOTFLEET_START_TIMEOUT_S": "6"}  # read by conftest's any_backend_manager


def kill_workload(manager: Manager, runtime_ref: str, sig: int = signal.SIGKILL) -> None:
    if manager.backend == "docker":
        subprocess.run(
            ["docker", "kill", "-s", str(int(sig)), runtime_ref], check=True, capture_output=True
        )
    else:
        os.kill(int(runtime_ref.split("-")[0]), sig)


def workload_gone(manager: Manager, runtime_ref: str) -> bool:
    """What the engine says, independently of the manager."""
    if manager.backend == "docker":
        client = docker.from_env()
        try:
            state = client.api.inspect_container(runtime_ref)["State"]
        except docker.errors.NotFound:
            return True
        finally:
            client.close()
        return state["Status"] in ("exited", "dead", "removing")
    stat = Path(f"/proc/{runtime_ref.split('-')[0]}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture
def manager(any_backend_manager: Manager) -> Manager:
    return any_backend_manager


def test_a_sigkilled_bot_fails_with_its_exit_code(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {}}).json()
    ref = wait_for_status(client, bot["id"], {"active"})["runtime_ref"]
    killed_at = time.monotonic()
    kill_workload(manager, ref)
    done = wait_for_status(client, bot["id"], {"failed", "completed"}, timeout=30)
    figure(f"bot death → failed ({manager.backend})", time.monotonic() - killed_at)
    assert verdict(done["status"] == "failed" and workload_gone(manager, ref))
    assert done["status_reason"] == "workload_vanished" and done["exit_code"] == 137


def test_a_bot_that_never_calls_back_fails_on_start_timeout(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {"silent": True}}).json()
    ref = wait_for_status(client, bot["id"], {"starting"})["runtime_ref"]
    done = wait_for_status(client, bot["id"], {"failed", "completed", "active"}, timeout=30)
    assert (done["status"], done["status_reason"]) == ("failed", "start_timeout")
    wait_until(
        lambda: workload_gone(manager, done["runtime_ref"] or ref),
        timeout=15,
        what="the silent bot's workload to be stopped",
    )
    verdict(True)


def test_a_frozen_bot_is_declared_lost_and_killed(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {"freeze_after_s": 0.5}}).json()
    ref = wait_for_status(client, bot["id"], {"active"})["runtime_ref"]
    assert not workload_gone(manager, ref)
    done = wait_for_status(client, bot["id"], {"failed", "completed"}, timeout=30)
    assert (done["status"], done["status_reason"]) == ("failed", "heartbeat_lost")
    wait_until(lambda: workload_gone(manager, ref), timeout=15, what="the frozen bot killed")
    verdict(True)


def test_a_lost_leave_still_ends_the_bot(manager: Manager) -> None:
    """The bot never acts on `leave` (as if the message were lost): killed after the grace."""
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {"ignore_leave": True}}).json()
    ref = wait_for_status(client, bot["id"], {"active"})["runtime_ref"]
    asked_at = time.monotonic()
    client.post(f"/bots/{bot['id']}/stop")
    done = wait_for_status(client, bot["id"], {"completed", "failed"}, timeout=40)
    figure(f"lost leave → bot ended ({manager.backend})", time.monotonic() - asked_at)
    assert (done["status"], done["status_reason"]) == ("completed", "killed_after_grace")
    assert verdict(workload_gone(manager, ref))


@pytest.mark.parametrize("backend", ["process", "docker"])
def test_manager_sigkilled_while_bots_start(
    backend: str, tmp_path: Path, redis_server: RedisServer, request: pytest.FixtureRequest
) -> None:
    if backend == "docker":
        request.getfixturevalue("docker_engine")
    with running_manager(tmp_path, redis_server.url, backend=backend) as manager:
        _, client = manager.new_user()
        ids = [
            client.post("/bots", json={"bot": "demo", "config": {}}).json()["id"] for _ in range(6)
        ]
        manager.stop(signal.SIGKILL)  # some launches are still in flight
        manager.start()
        for bot_id in ids:
            done = wait_for_status(client, bot_id, {"active", "failed"}, timeout=60)
            assert verdict(done["status"] == "active"), done
        for bot_id in ids:  # one attempt per bot: nothing was launched twice
            assert client.get(f"/bots/{bot_id}").json()["attempt"] == 1
            client.post(f"/bots/{bot_id}/stop")
        for bot_id in ids:
            done = wait_for_status(client, bot_id, {"completed", "failed"})
            assert verdict(done["status"] == "completed"), done


def test_redis_down_for_10s_while_commands_are_sent(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    try:
        with running_manager(tmp_path, redis_server.url) as manager:
            _, client = manager.new_user()
            ids = [
                client.post("/bots", json={"bot": "demo", "config": {}}).json()["id"]
                for _ in range(3)
            ]
            for bot_id in ids:
                wait_for_status(client, bot_id, {"active"})
            redis_server.stop()
            down_at = time.monotonic()
            sent = []
            for round_ in range(3):
                for bot_id in ids:
                    body = {"config": {"round": round_}}
                    response = client.patch(f"/bots/{bot_id}/config", json=body)
                    assert response.status_code == 202
                    sent.append((bot_id, response.json()["id"]))
                time.sleep(3)
            time.sleep(max(0.0, 10 - (time.monotonic() - down_at)))
            redis_server.start()
            for bot_id, command_id in sent:
                acked = wait_for_command(
                    client, bot_id, command_id, {"acked", "failed"}, timeout=60
                )
                assert acked["status"] == "acked"
            for bot_id in ids:
                bot = client.get(f"/bots/{bot_id}").json()
                assert verdict(bot["config"] == {"round": 2} and bot["config_version"] == 4)
                assert bot["status"] == "active"
    finally:
        redis_server.stop()


@pytest.mark.serial  # every other test uses this PostgreSQL server
@pytest.mark.skipif(database_kind() != "postgresql", reason="restarts the PostgreSQL server")
def test_postgres_restart_under_load(manager: Manager) -> None:
    _, client = manager.new_user(max_bots=50)
    ids = [client.post("/bots", json={"bot": "demo", "config": {}}).json()["id"] for _ in range(4)]
    for bot_id in ids:
        wait_for_status(client, bot_id, {"active"})
    stop = threading.Event()
    errors: list[str] = []

    def load() -> None:
        with httpx.Client(base_url=manager.url, headers=client.headers, timeout=30) as c:
            while not stop.is_set():
                try:
                    response = c.get("/bots")
                except httpx.HTTPError:
                    continue  # the manager itself is never down here; a reset is possible
                if response.status_code >= 500 and response.status_code != 503:
                    errors.append(response.text)
                time.sleep(0.05)

    loader = threading.Thread(target=load)
    loader.start()
    version = sorted(os.listdir("/usr/lib/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", version, "main", "restart"], check=True)
    time.sleep(2)
    stop.set()
    loader.join()

    def recovered() -> bool:
        return client.get("/bots").status_code == 200

    wait_until(recovered, timeout=30, what="the API after the database restart")
    assert errors == [], "during the restart: 503 with a code, never a bare 500"
    # Nothing was lost: the bots are still active (heartbeats retried) a full heartbeat budget
    # after the reconciler leads again, and still controllable.
    manager.judged_a_heartbeat_budget_after_leading()
    for bot_id in ids:
        assert verdict(client.get(f"/bots/{bot_id}").json()["status"] == "active")
        client.post(f"/bots/{bot_id}/stop")
    for bot_id in ids:
        assert verdict(
            wait_for_status(client, bot_id, {"completed", "failed"})["status"] == "completed"
        )


def leader(manager: Manager) -> bool:
    text = httpx.get(f"{manager.url}/metrics").text
    return "botfleet_reconciler_leader 1.0" in text


def test_two_managers_and_the_lock_holder_dies(tmp_path: Path, redis_server: RedisServer) -> None:
    with running_manager(tmp_path, redis_server.url) as first:
        second = Manager(
            data_dir=first.data_dir, database_url=first.database_url, redis_url=redis_server.url
        )
        second.start()
        try:
            wait_until(lambda: leader(first) or leader(second), timeout=10, what="a leader")
            assert not (leader(first) and leader(second)), "one leader at a time"
            holder, other = (first, second) if leader(first) else (second, first)
            _, client = other.new_user()
            bot = client.post("/bots", json={"bot": "demo", "config": {}}).json()
            ref = wait_for_status(client, bot["id"], {"active"})["runtime_ref"]
            holder.stop(signal.SIGKILL)
            wait_until(lambda: leader(other), timeout=15, what="the other manager to lead")
            os.kill(int(ref.split("-")[0]), signal.SIGKILL)
            done = wait_for_status(client, bot["id"], {"failed", "completed"}, timeout=30)
            assert verdict(done["status_reason"] == "workload_vanished")
        finally:
            second.stop()

"""The docker backend against a real Docker Engine: hardening, engine truth, engine errors."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.support import (
    Manager,
    RedisServer,
    running_manager,
    transitions,
    wait_for_status,
    wait_until,
)


@pytest.fixture(scope="module")
def manager(
    docker_engine: None, tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("docker-manager")
    # The missing-image test names an image the engine lacks: it must pass the allow-list.
    env = {"BOTFLEET_ALLOWED_IMAGES": '["botfleet-runtime:latest", "botfleet-no-such-image:*"]'}
    with running_manager(root, redis_server.url, backend="docker", extra_env=env) as instance:
        yield instance


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


def test_containers_are_hardened_and_labelled(
    manager: Manager, engine: docker.DockerClient
) -> None:
    user, client = manager.new_user()
    bot = client.post(
        "/bots",
        json={
            "bot": "demo",
            "config": {},
            "secrets": {"api_key": "very-secret"},
            "labels": {"team": "a"},
        },
    ).json()
    active = wait_for_status(client, bot["id"], {"active"})
    attrs = engine.containers.get(active["runtime_ref"]).attrs
    host = attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["NetworkMode"] == "host"
    assert host["PidsLimit"] == 256 and host["Memory"] == 512 * 2**20
    assert host["NanoCpus"] == 10**9
    assert "/tmp" in host["Tmpfs"]
    assert host["AutoRemove"] is False, "exit codes are read before removal"
    assert attrs["Config"]["User"] == "10001:10001"
    labels = attrs["Config"]["Labels"]
    assert labels["botfleet.bot_id"] == bot["id"] and labels["botfleet.user_id"] == user["id"]
    assert labels["botfleet.managed"] == "true" and labels["botfleet.label.team"] == "a"
    assert "very-secret" not in str(labels), "secrets never go into labels"
    client.post(f"/bots/{bot['id']}/stop")
    assert wait_for_status(client, bot["id"], {"completed", "failed"})["status"] == "completed"


def test_a_bots_own_cpu_and_memory_reach_its_container(
    manager: Manager, engine: docker.DockerClient
) -> None:
    """A bot's `resources` in place of the backend's defaults (1 CPU, 512 MiB); a placement,
    which one engine cannot honour, is refused before anything is stored."""
    _, client = manager.new_user()
    placed = {"bot": "demo", "config": {}, "placement": {"constraints": ["node.role==worker"]}}
    refused = client.post("/bots", json=placed)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"]["code"] == "placement_unsupported"
    assert client.get("/bots").json()["items"] == []
    sized = {"bot": "demo", "config": {}, "resources": {"cpu": 0.5, "memory_mb": 300}}
    bot = client.post("/bots", json=sized).json()
    ref = wait_until(
        lambda: client.get(f"/bots/{bot['id']}").json()["runtime_ref"], what="the container"
    )
    host = engine.containers.get(ref).attrs["HostConfig"]
    assert (host["NanoCpus"], host["Memory"]) == (5 * 10**8, 300 * 2**20)
    assert client.post(f"/bots/{bot['id']}/stop").status_code == 202
    wait_for_status(client, bot["id"], {"completed", "failed"})


def test_docker_kill_fails_the_bot_with_the_engines_exit_code(
    manager: Manager, engine: docker.DockerClient
) -> None:
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {}}).json()
    ref = wait_for_status(client, bot["id"], {"active"})["runtime_ref"]
    subprocess.run(["docker", "kill", ref], check=True, capture_output=True)
    done = wait_for_status(client, bot["id"], {"failed", "completed"})
    assert (done["status"], done["status_reason"], done["exit_code"]) == (
        "failed",
        "workload_vanished",
        137,
    )
    assert transitions(client, bot["id"])[-1][3] == "reconciler"


def test_missing_image_fails_with_a_reason(manager: Manager) -> None:
    _, client = manager.new_user()
    bot = client.post(
        "/bots", json={"bot": "demo", "config": {}, "image": "botfleet-no-such-image:1"}
    ).json()
    done = wait_for_status(client, bot["id"], {"failed", "completed"})
    assert (done["status"], done["status_reason"]) == ("failed", "image_not_found")
    last = client.get(f"/bots/{bot['id']}/transitions").json()["items"][-1]
    assert "botfleet-no-such-image:1" in last["detail"]


def test_ended_containers_are_removed_after_their_exit_is_recorded(
    manager: Manager, engine: docker.DockerClient
) -> None:
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {"crash_after_s": 0.5}}).json()
    done = wait_for_status(client, bot["id"], {"failed", "completed"})
    assert (done["exit_code"], done["status_reason"]) == (1, "crashed")

    def removed() -> bool:
        return not engine.api.containers(
            all=True, filters={"label": f"botfleet.bot_id={bot['id']}"}
        )

    wait_until(removed, timeout=20, what="the ended container to be removed")
    logs = client.get(f"/bots/{bot['id']}/logs", params={"tail": 100}).text
    assert "crash_after_s" in logs, "the last lines are kept after the container is gone"


def test_the_default_network_runs_a_bot_on_a_fresh_engine(
    manager: Manager, engine: docker.DockerClient
) -> None:
    assert "BOTFLEET_DOCKER_NETWORK" not in manager.env()
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {}}).json()
    active = wait_for_status(client, bot["id"], {"active", "failed", "completed"})
    assert active["status"] == "active", active
    host = engine.containers.get(active["runtime_ref"]).attrs["HostConfig"]
    assert host["NetworkMode"] == "host", "bots reach the manager and Redis on 127.0.0.1"
    assert client.post(f"/bots/{bot['id']}/stop").status_code == 202
    done = wait_for_status(client, bot["id"], {"completed", "failed"})
    assert (done["status"], done["exit_code"]) == ("completed", 0)


def test_a_network_the_engine_refuses_fails_the_bot_with_a_reason_not_a_500(
    docker_engine: None, tmp_path: Path, redis_server: RedisServer
) -> None:
    # `default` is a name every Linux engine refuses for a new network.
    env = {"BOTFLEET_DOCKER_NETWORK": "default"}
    with running_manager(tmp_path, redis_server.url, backend="docker", extra_env=env) as refused:
        _, client = refused.new_user()
        response = client.post("/bots", json={"bot": "demo", "config": {}})
        assert response.status_code == 201, response.text
        done = wait_for_status(client, response.json()["id"], {"failed", "completed"})
        assert (done["status"], done["status_reason"]) == ("failed", "network_unavailable")
        last = client.get(f"/bots/{done['id']}/transitions").json()["items"][-1]
        assert "'default'" in last["detail"] and "BOTFLEET_DOCKER_NETWORK" in last["detail"]
        # The next bot gets the same clear answer (the engine is asked again, nothing is stuck).
        again = client.post("/bots", json={"bot": "demo", "config": {}})
        assert again.status_code == 201, again.text
        assert wait_for_status(client, again.json()["id"], {"failed"})["status_reason"] == (
            "network_unavailable"
        )

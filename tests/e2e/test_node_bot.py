"""A Node.js bot (sdk/node/examples/echo.mjs) as an `exec` kind on the process, docker and nomad
backends:
it starts, reconfigures, answers a custom command, reports, keeps a command sent while Redis
restarts, and leaves; all through the public API, as a team bringing its own Node bot would.

On docker the kind names the Node runtime image (docker/node-runtime.Dockerfile: Debian's nodejs
and the SDK; scripts/build-images.sh builds it) and runs the example copied into it. On nomad
(the stand-in, tests/nomad_standin/, docker driver) the job's `entrypoint` is the kind's argv and
the stand-in runs it on this host: what it proves is the job we submit and that the bot lives
through it; that Docker runs `entrypoint` in the image is Nomad's drivers/docker/config.go."""

from __future__ import annotations

import os
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.nomad_standin import StandIn
from tests.support import (
    RedisServer,
    running_manager,
    wait_for_command,
    wait_for_status,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
ECHO = REPO / "sdk" / "node" / "examples" / "echo.mjs"
NODE = shutil.which("node")
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
NODE_IMAGE = os.environ.get("BOTFLEET_TEST_NODE_IMAGE", f"botfleet-node-runtime:{VERSION}")

KIND = {
    "name": "node-echo",
    "description": "The Node SDK's echo example",
    "config_schema": {
        "type": "object",
        "properties": {"greeting": {"type": "string"}},
        "additionalProperties": False,
    },
    "commands": {
        "echo": {"type": "object"},
        "count": {"type": "object", "additionalProperties": False},
    },
    # In place of each backend's per-bot defaults (checked below, as each engine was asked).
    "resources": {"cpu": 0.5, "memory_mb": 300},
}
MEMORY_BYTES = 300 * 1024 * 1024


# Where the kind's argv runs: node on this host, or the image's node and its copy of the example.
RUN: dict[str, dict[str, Any]] = {
    "process": {"run": {"exec": [NODE or "node", str(ECHO)]}},
    "docker": {
        "run": {"exec": ["node", "/opt/botfleet/examples/echo.mjs"]},
        "image": NODE_IMAGE,
    },
    "nomad": {"run": {"exec": [NODE or "node", str(ECHO)]}, "image": NODE_IMAGE},
}
NOMAD_TOKEN = "nomad-acl-token-for-tests"


@pytest.fixture
def nomad_standin(tmp_path: Path) -> Iterator[StandIn]:
    standin = StandIn(tmp_path / "nomad", token=NOMAD_TOKEN, datacenter="dc-test").start()
    try:
        yield standin
    finally:
        standin.stop()


def _nomad_env(standin: StandIn) -> dict[str, str]:
    """The manager settings that point at the stand-in."""
    return {
        "BOTFLEET_NOMAD_ADDRESS": standin.url,
        "BOTFLEET_NOMAD_TOKEN": NOMAD_TOKEN,
        "BOTFLEET_NOMAD_DATACENTERS": '["dc-test"]',
    }


def _cgroup_file(pid: int, controller: str, name: str) -> Path | None:
    """`name` in the pid's cgroup of `controller` (v1), or of the unified hierarchy (v2)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") or controllers == "":
            for root in (controller, "cpu,cpuacct", ""):
                found = Path("/sys/fs/cgroup", root, path.lstrip("/"), name)
                if found.exists():
                    return found
    return None


def _assert_own_resources(backend: str, runtime_ref: str, bot_id: str, standin: Any) -> None:
    """The kind's CPU and memory, as each engine was asked for them."""
    if backend == "docker":
        import docker

        engine = docker.from_env(timeout=10)
        try:
            host = engine.containers.get(runtime_ref).attrs["HostConfig"]
        finally:
            engine.close()
        assert (host["Memory"], host["NanoCpus"]) == (MEMORY_BYTES, 500_000_000), host
    elif backend == "nomad":
        resources = standin.job(runtime_ref).spec["TaskGroups"][0]["Tasks"][0]["Resources"]
        assert (resources["MemoryMB"], resources["CPU"]) == (300, 500), resources
    else:
        marker = f"BOTFLEET_BOT_ID={bot_id}".encode()
        pid = next(
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and _environ_has(p, marker)
        )
        memory = _cgroup_file(pid, "memory", "memory.limit_in_bytes") or _cgroup_file(
            pid, "memory", "memory.max"
        )
        if memory is None:  # no cgroup per bot here: the address-space limit says it
            assert f"{MEMORY_BYTES}" in Path(f"/proc/{pid}/limits").read_text()
            return
        assert int(memory.read_text()) == MEMORY_BYTES
        quota = _cgroup_file(pid, "cpu", "cpu.cfs_quota_us")
        cpu_max = _cgroup_file(pid, "cpu", "cpu.max")
        if quota is not None:
            assert int(quota.read_text()) == 50_000
        elif cpu_max is not None:
            assert cpu_max.read_text().split() == ["50000", "100000"]


def _environ_has(proc: Path, marker: bytes) -> bool:
    try:
        return marker in (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return False


@pytest.fixture
def node_image(docker_engine: None) -> str:
    """The Node runtime image, built by `make test`: missing, the docker case fails, never skips."""
    import docker

    client = docker.from_env(timeout=10)
    try:
        client.images.get(NODE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {NODE_IMAGE} missing; run scripts/build-images.sh", pytrace=False)
    finally:
        client.close()
    return NODE_IMAGE


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param(
            "process",
            marks=pytest.mark.skipif(NODE is None, reason="needs node (>= 20) on PATH"),
        ),
        "docker",
        pytest.param(
            "nomad",
            marks=pytest.mark.skipif(NODE is None, reason="needs node (>= 20) on PATH"),
        ),
    ],
)
def test_a_node_bot_of_an_exec_kind_lives_a_whole_life(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "docker":
        request.getfixturevalue("node_image")
    standin = request.getfixturevalue("nomad_standin") if backend == "nomad" else None
    extra_env = _nomad_env(standin) if standin is not None else {}
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    try:
        with running_manager(
            tmp_path, redis_server.url, backend=backend, extra_env=extra_env
        ) as manager:
            with manager.admin() as admin:
                registered = admin.post("/admin/kinds", json={**KIND, **RUN[backend]})
                assert registered.status_code == 201, registered.text
            _, client = manager.new_user()
            created = client.post("/bots", json={"bot": "node-echo", "config": {"greeting": "hej"}})
            assert created.status_code == 201, created.text
            bot_id = created.json()["id"]
            active = wait_for_status(client, bot_id, {"active", "failed", "completed"})
            assert active["status"] == "active", manager.log_tail()
            _assert_own_resources(backend, active["runtime_ref"], bot_id, standin)

            def report() -> dict[str, object] | None:
                return client.get(f"/bots/{bot_id}").json().get("report")

            assert wait_until(lambda: report() == {"phase": "started", "greeting": "hej"})

            patched = client.patch(f"/bots/{bot_id}/config", json={"config": {"greeting": "hallo"}})
            assert patched.status_code == 202, patched.text
            applied = wait_for_command(client, bot_id, patched.json()["id"], {"acked", "failed"})
            assert applied["status"] == "acked", applied
            assert client.get(f"/bots/{bot_id}").json()["config"] == {"greeting": "hallo"}
            assert wait_until(lambda: report() == {"phase": "reconfigured", "greeting": "hallo"})

            echo = client.post(
                f"/bots/{bot_id}/commands", json={"action": "echo", "payload": {"text": "é 1.0"}}
            )
            assert echo.status_code == 202, echo.text
            answered = wait_for_command(client, bot_id, echo.json()["id"], {"acked", "failed"})
            assert answered["status"] == "acked" and answered["result"] == {"text": "é 1.0"}

            # Redis restarts (without the bots' ACL users); a command sent meanwhile still arrives.
            redis_server.stop()
            count = client.post(f"/bots/{bot_id}/commands", json={"action": "count", "payload": {}})
            assert count.status_code == 202, count.text
            redis_server.start()
            counted = wait_for_command(
                client, bot_id, count.json()["id"], {"acked", "failed"}, timeout=60
            )
            assert counted["status"] == "acked" and counted["result"] == {"answered": 1}
            assert client.get(f"/bots/{bot_id}").json()["status"] == "active"

            assert client.post(f"/bots/{bot_id}/stop").status_code == 202
            done = wait_for_status(client, bot_id, {"completed", "failed"})
            assert done["status"] == "completed" and done["exit_code"] == 0, done
            assert done["status_reason"] == "left", done
    finally:
        redis_server.stop()

"""The backend contract suite (tests/integration/backends/test_backend_contract.py), unchanged,
against a real three-node Swarm (tests/cluster/swarm_nodes.py): its test functions are imported
here and run on the `harness` below, the swarm's own.

What the engine shows outside the bot's environment (`exposed`): the service, its tasks and its
secret as the swarm manager inspects them, the task's container as its node's engine inspects
it (its Env included: on swarm it holds nothing secret), and every process of the container's
command line and environment. What the bot receives (`environ`): its container's Env plus the
secrets file the runtime's pipe reads, as the bot's own uid reads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from botfleet.orchestrators.swarm import SwarmOrchestrator, SwarmOrchestratorConfig
from botfleet.orchestrators.swarm.service_spec import SECRET_PATH
from tests.cluster.swarm_nodes import SwarmCluster
from tests.integration.backends import test_backend_contract as contract
from tests.integration.backends.test_backend_contract import (  # noqa: F401 - run here
    Harness,
    test_a_bot_that_ends_on_its_own_reports_its_exit_code,
    test_a_runtime_that_refuses_its_environment_exits_2,
    test_an_unreachable_engine_is_unavailable_never_not_found,
    test_launch_runs_the_bot_with_its_environment,
    test_list_workloads_filters_by_labels,
    test_logs_hold_both_streams_and_tail,
    test_remove_refuses_a_running_workload_then_forgets_it,
    test_secrets_reach_only_the_environment,
    test_stop_kills_a_bot_that_ignores_sigterm_after_the_grace,
    test_stop_with_grace_ends_with_the_bots_exit_code,
    test_workloads_the_engine_never_had_are_not_found,
)
from tests.support import RedisServer


def swarm_config(cluster: SwarmCluster, **overrides: object) -> SwarmOrchestratorConfig:
    """The backend on n1 (the manager), every node's engine reachable, the image by id."""
    settings: dict[str, object] = {
        "base_url": cluster.manager_node.socket_url,
        "node_engines": {name: node.socket_url for name, node in cluster.nodes.items()},
        "default_image": cluster.image_id,
        "stop_grace_s": 5,
        "api_timeout_s": 10,
        **overrides,
    }
    return SwarmOrchestratorConfig(**settings)  # type: ignore[arg-type]


def _container(backend: SwarmOrchestrator, ref: str):  # type: ignore[no-untyped-def]
    view = backend.reader.view(ref)
    assert view is not None and view.container_id, f"service {ref} has no container"
    client = backend.engines.client_for(view.node)
    assert client is not None
    return client.containers.get(view.container_id)


def _proc(pid: str, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:  # ended meanwhile
        return ""


def swarm_harness(cluster: SwarmCluster, redis_url: str) -> Harness:
    backend = SwarmOrchestrator(swarm_config(cluster))
    api = cluster.manager_client.api

    def environ(ref: str) -> dict[str, str]:
        container = _container(backend, ref)
        env = dict(item.partition("=")[::2] for item in container.attrs["Config"]["Env"])
        code, secrets = container.exec_run(["cat", SECRET_PATH], user="10001:10001")
        assert code == 0, secrets
        return env | json.loads(secrets)

    def exposed(ref: str) -> list[str]:
        service = api.inspect_service(ref)
        spec = service["Spec"]["TaskTemplate"]["ContainerSpec"]
        secrets = [api.inspect_secret(s["SecretID"]) for s in spec.get("Secrets", [])]
        assert secrets, "the attempt's secret"
        container = _container(backend, ref)
        texts = [json.dumps(service), json.dumps(api.tasks(filters={"service": ref}))]
        texts += [json.dumps(secrets), json.dumps(container.attrs)]
        top = container.top()
        column = top["Titles"].index("PID")
        for process in top["Processes"]:
            texts += [_proc(process[column], "cmdline"), _proc(process[column], "environ")]
        return texts

    return Harness(
        name="swarm",
        backend=backend,
        redis_url=redis_url,
        environ=environ,
        exposed=exposed,
        unreachable=lambda: SwarmOrchestrator(
            SwarmOrchestratorConfig(base_url="unix:///nonexistent/docker.sock")
        ),
        unknown_refs=("0123456789abcdefghijklmno", "", "../../etc/passwd"),
        sigkill_detail="137",
        sees_only_its_own=False,  # the drills share the swarm
    )


@pytest.fixture
def harness(swarm_cluster: SwarmCluster, swarm_redis: RedisServer) -> Iterator[Harness]:
    made = swarm_harness(swarm_cluster, swarm_redis.url)
    yield made
    made.close()


def test_a_second_launch_of_the_same_attempt_is_a_name_conflict(harness: Harness) -> None:
    """The suite's case for engines that name workloads (it is parametrized for the others)."""
    contract.test_a_second_launch_of_the_same_attempt_is_a_name_conflict(harness)

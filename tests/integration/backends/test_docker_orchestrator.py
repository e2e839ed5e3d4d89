"""The docker backend on its own, against a real Docker Engine (no manager runs meanwhile,
whose reconciler would stop these unrecorded containers as orphans)."""

from __future__ import annotations

import uuid

import docker
import pytest

from botfleet.orchestrators.base import LaunchFailed, LaunchSpec
from botfleet.orchestrators.docker import DockerOrchestrator, DockerOrchestratorConfig
from tests.support import RUNTIME_IMAGE


def spec(bot_id: str, image: str = RUNTIME_IMAGE) -> LaunchSpec:
    return LaunchSpec(bot_id=bot_id, user_id="u", attempt=1, image=image, env={})


def test_a_missing_image_is_a_launch_failure(docker_engine: None) -> None:
    """Name conflicts, exit codes, listing and remove run on every backend in
    tests/integration/backends/test_backend_contract.py."""
    backend = DockerOrchestrator(DockerOrchestratorConfig(network="host"))
    bot_id = f"noimage-{uuid.uuid4().hex[:8]}"
    with pytest.raises(LaunchFailed) as missing:
        backend.launch(spec(bot_id, image="botfleet-no-such-image:1"))
    assert missing.value.code == "image_not_found"
    assert backend.list_workloads({"botfleet.bot_id": bot_id}) == [], "no container was made"
    backend.close()


def test_a_named_network_the_engine_lacks_is_created_and_made_again_if_removed(
    docker_engine: None,
) -> None:
    engine = docker.from_env()
    name = f"botfleet-test-{uuid.uuid4().hex[:8]}"
    backend = DockerOrchestrator(DockerOrchestratorConfig(network=name))
    refs: list[str] = []
    try:
        for round_ in ("created", "created again"):
            ref = backend.launch(spec(f"net-{uuid.uuid4().hex[:8]}"))
            refs.append(ref)
            attrs = engine.containers.get(ref).attrs
            assert attrs["HostConfig"]["NetworkMode"] == name, round_
            assert list(attrs["NetworkSettings"]["Networks"]) == [name], round_
            network = engine.networks.get(name)
            assert network.attrs["Driver"] == "bridge"
            assert network.attrs["Labels"] == {"botfleet.managed": "true"}
            # An operator removes the network behind the manager's back: the next launch
            # creates it again instead of failing.
            backend.stop(ref, grace_s=1)
            backend.remove(ref)
            network.remove()
    finally:
        for ref in refs:
            backend.stop(ref, grace_s=1)
            backend.remove(ref)
        for leftover in engine.networks.list(names=[name]):
            leftover.remove()
        backend.close()
        engine.close()


def test_a_network_the_engine_refuses_to_create_fails_the_launch_with_its_reason(
    docker_engine: None,
) -> None:
    # `default` is a name every Linux engine refuses for a new network (a predefined mode).
    backend = DockerOrchestrator(DockerOrchestratorConfig(network="default"))
    bot_id = f"refused-{uuid.uuid4().hex[:8]}"
    with pytest.raises(LaunchFailed) as refused:
        backend.launch(spec(bot_id))
    assert refused.value.code == "network_unavailable"
    assert "'default'" in str(refused.value) and "BOTFLEET_DOCKER_NETWORK" in str(refused.value)
    assert backend.list_workloads({"botfleet.bot_id": bot_id}) == [], "no container was made"
    backend.close()

"""compose.yaml, as a real compose implementation reads it (`docker-compose config`), so the file
cannot rot: valid, on the images build-images.sh makes, on settings that exist, and with every
address the bots are handed reachable on the network they join."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any
from urllib.parse import urlsplit

import docker
import pytest
import yaml

from manager.config import Settings
from orchestrators.docker import DockerOrchestratorConfig
from tests.support import REPO


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The file as docker-compose resolves it; a missing docker-compose fails, never skips."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose missing; run scripts/docker-engine.sh", pytrace=False)
    result = subprocess.run(
        [binary, "-f", str(REPO / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, f"compose.yaml is invalid:\n{result.stderr}"
    parsed: dict[str, Any] = yaml.safe_load(result.stdout)
    return parsed


def test_the_stack_is_postgres_redis_and_a_manager_on_the_docker_backend(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "manager"}
    manager = services["manager"]
    env = manager["environment"]
    assert env["BOTFLEET_ORCHESTRATOR"] == "docker"
    assert _mounts(manager).get("/var/run/docker.sock") == "/var/run/docker.sock"
    assert set(manager["depends_on"]) == {"postgres", "redis"}
    assert _published(manager) == [("127.0.0.1", "8080", "8080")], "the API on loopback only"


def test_the_images_are_the_ones_build_images_makes(
    compose: dict[str, Any], docker_engine: None
) -> None:
    manager = compose["services"]["manager"]
    runtime = manager["environment"]["BOTFLEET_DOCKER_DEFAULT_IMAGE"]
    assert manager["image"] == "botfleet-manager:latest"
    assert runtime == DockerOrchestratorConfig.model_fields["default_image"].default
    assert manager.get("pull_policy") == "never", "botfleet's images are built, never pulled"
    assert "build" not in manager, "the build needs the wheelhouse: scripts/build-images.sh"
    engine = docker.from_env()
    try:
        for image in (manager["image"], runtime):
            engine.images.get(image)  # ImageNotFound: build-images.sh no longer makes it
    finally:
        engine.close()


def test_every_setting_the_manager_gets_exists(compose: dict[str, Any]) -> None:
    """A renamed setting would be ignored silently (extra="ignore"): catch it here."""
    env = compose["services"]["manager"]["environment"]
    known = {f"BOTFLEET_{name.upper()}" for name in Settings.model_fields}
    known |= {f"BOTFLEET_DOCKER_{name.upper()}" for name in DockerOrchestratorConfig.model_fields}
    assert set(env) <= known, f"unknown settings: {sorted(set(env) - known)}"


def test_bots_join_the_named_network_and_reach_the_manager_and_redis_by_service_name(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    env = services["manager"]["environment"]
    network = env["BOTFLEET_DOCKER_NETWORK"]
    assert network != "host", "in compose the manager is not on the host's network"
    # The network's real name must be the one the bots are told to join: without `name:`,
    # compose prefixes it with the project's, and the backend would create another network.
    declared = {key: (spec or {}).get("name") for key, spec in compose["networks"].items()}
    assert network in declared.values(), f"no network is named {network!r}: {declared}"
    key = next(k for k, name in declared.items() if name == network)
    for name, service in services.items():
        assert key in service["networks"], f"{name} is not on the bots' network"
    for variable, service in (
        ("BOTFLEET_CALLBACK_URL", "manager"),
        ("BOTFLEET_REDIS_URL", "redis"),
        ("BOTFLEET_DATABASE_URL", "postgres"),
    ):
        assert urlsplit(env[variable]).hostname == service, variable


# docker-compose 1.x prints short forms, 2.x long ones (Debian trixie's docker-compose is 2.x).


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a service's volumes."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        mounts[target] = source
    return mounts


def _published(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of a service's published ports."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, str):
            host_ip, published, target = port.split("/")[0].rsplit(":", 2)
        else:
            host_ip, published, target = port.get("host_ip", ""), port["published"], port["target"]
        ports.append((host_ip, str(published), str(target)))
    return ports

"""compose.yaml, as a real compose implementation reads it (`docker-compose config`), so the file
cannot rot: valid, on the images build-images.sh makes, on settings that exist, with every
address the bots are handed reachable on the network they join, PostgreSQL on no network a bot
joins, and no password but the ones scripts/compose-env.sh generates."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import pytest
import yaml

from botfleet.manager.core.settings import Settings
from botfleet.orchestrators.docker import DockerOrchestratorConfig
from tests.support import REPO

ENV_SCRIPT = REPO / "scripts" / "compose-env.sh"
SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "BOTFLEET_ADMIN_TOKEN")


def _compose_config(*args: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose [args] -f compose.yaml config`; a missing docker-compose fails, never
    skips."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose missing; run scripts/docker-engine.sh", pytrace=False)
    return subprocess.run(
        [binary, *args, "-f", str(REPO / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        # The shell's values would win over the env file's: hand compose none of them.
        env={k: v for k, v in os.environ.items() if k not in SECRETS},
    )


def _env_file(path: Path) -> dict[str, str]:
    """Run scripts/compose-env.sh for `path`; the values it holds."""
    subprocess.run(["bash", str(ENV_SCRIPT), str(path)], check=True, capture_output=True)
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated env file, outside the repository (never the user's own .env)."""
    path = tmp_path_factory.mktemp("compose") / ".env"
    _env_file(path)
    return path


@pytest.fixture(scope="module")
def compose(env_file: Path) -> dict[str, Any]:
    """The file as docker-compose resolves it, with the generated secrets."""
    result = _compose_config("--env-file", str(env_file))
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
    for name in ("manager", "redis"):
        assert key in services[name]["networks"], f"{name} is not on the bots' network"
    for variable, service in (
        ("BOTFLEET_CALLBACK_URL", "manager"),
        ("BOTFLEET_REDIS_URL", "redis"),
        ("BOTFLEET_DATABASE_URL", "postgres"),
    ):
        assert urlsplit(env[variable]).hostname == service, variable


def test_postgres_is_on_no_network_the_bots_join(compose: dict[str, Any]) -> None:
    services, networks = compose["services"], compose["networks"]
    bots_network = services["manager"]["environment"]["BOTFLEET_DOCKER_NETWORK"]
    [bots_key] = [k for k, spec in networks.items() if (spec or {}).get("name") == bots_network]
    postgres_networks = set(services["postgres"]["networks"])
    assert bots_key not in postgres_networks
    assert bots_network not in postgres_networks
    # PostgreSQL's networks are internal (no way out) and shared with the manager only.
    for key in postgres_networks:
        assert networks[key].get("internal") is True, key
        assert networks[key].get("name") != bots_network
        members = {name for name, service in services.items() if key in service["networks"]}
        assert members == {"postgres", "manager"}, (key, members)


def test_redis_and_the_manager_require_the_generated_passwords(
    compose: dict[str, Any], env_file: Path
) -> None:
    secrets = _env_file(env_file)
    services = compose["services"]
    env = services["manager"]["environment"]
    assert urlsplit(env["BOTFLEET_DATABASE_URL"]).password == secrets["POSTGRES_PASSWORD"]
    assert urlsplit(env["BOTFLEET_REDIS_URL"]).password == secrets["REDIS_PASSWORD"]
    assert env["BOTFLEET_ADMIN_TOKEN"] == secrets["BOTFLEET_ADMIN_TOKEN"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == secrets["POSTGRES_PASSWORD"]
    redis = services["redis"]
    assert "requirepass" in " ".join([*redis.get("entrypoint", []), *redis.get("command", [])])
    assert redis["environment"]["REDIS_PASSWORD"] == secrets["REDIS_PASSWORD"]
    # Bots are handed Redis's address without the manager's password (they get their own user).
    bot_redis = urlsplit(env["BOTFLEET_BOT_REDIS_URL"])
    assert (bot_redis.hostname, bot_redis.password) == ("redis", None)
    # No secret on a command line (`ps`, `docker inspect` show those).
    for name, service in services.items():
        argv = " ".join([*service.get("entrypoint", []), *service.get("command", [])])
        assert not any(value in argv for value in secrets.values()), name


def test_compose_yaml_holds_no_literal_password(tmp_path: Path) -> None:
    text = (REPO / "compose.yaml").read_text()
    raw = yaml.safe_load(text)
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|TOKEN|SECRET", key) or "://" in str(value):
                userinfo = urlsplit(str(value)).password if "://" in str(value) else str(value)
                assert userinfo is None or userinfo.startswith("${"), (name, key, value)
    assert "botfleet:botfleet@" not in text and "POSTGRES_PASSWORD: botfleet" not in text
    # Without the generated values compose refuses to run, and says what to do.
    (tmp_path / "empty.env").write_text("")
    result = _compose_config("--env-file", str(tmp_path / "empty.env"))
    assert result.returncode != 0
    assert "run scripts/compose-env.sh" in result.stderr


def test_the_env_script_writes_a_private_file_with_fresh_values(tmp_path: Path) -> None:
    first, second = tmp_path / "a.env", tmp_path / "b.env"
    values = _env_file(first)
    assert set(values) == set(SECRETS)
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in values.values()), values
    assert len(set(values.values())) == 3, "each secret is its own random value"
    assert set(_env_file(second).values()).isdisjoint(values.values()), "fresh on every file"
    # Run again: what is there stays; a missing value is added; the mode is put back to 0600.
    first.chmod(0o644)
    first.write_text(f"POSTGRES_PASSWORD={values['POSTGRES_PASSWORD']}")  # no final newline
    again = _env_file(first)
    assert again["POSTGRES_PASSWORD"] == values["POSTGRES_PASSWORD"]
    assert set(again) == set(SECRETS) and again["REDIS_PASSWORD"] != values["REDIS_PASSWORD"]
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    assert ".env" in (REPO / ".gitignore").read_text().split()


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

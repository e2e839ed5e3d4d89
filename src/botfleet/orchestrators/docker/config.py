"""Settings of the docker backend (environment: `BOTFLEET_DOCKER_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from botfleet.orchestrators.hardening import ContainerLimits


class DockerOrchestratorConfig(ContainerLimits):
    """Settings of the docker backend (environment: `BOTFLEET_DOCKER_*`)."""

    model_config = SettingsConfigDict(env_prefix="BOTFLEET_DOCKER_", extra="ignore")

    base_url: str | None = Field(
        None, description="Docker Engine address; DOCKER_HOST or the local socket when unset."
    )
    default_image: str = Field(
        "botfleet-runtime:latest", description="Image for bots whose request names none."
    )
    network: str = Field(
        "host",
        description="Network the containers join. `host` (the default) shares the host's "
        "network, so bots reach a manager and Redis listening on 127.0.0.1, and also every other "
        "port of the host, the database and Redis included. `none` gives them no network. Any "
        "other name is a Docker network, created as a bridge on the first launch when the engine "
        "has none of that name; bots must reach the manager and Redis from it "
        "(BOTFLEET_CALLBACK_URL, BOTFLEET_BOT_REDIS_URL).",
    )
    shm_mb: int = Field(
        64, gt=0, description="Size of each container's private /dev/shm (Docker's shm_size)."
    )
    state_volume_mb: int = Field(
        0,
        ge=0,
        description="Size cap of each new `state_key` volume (the local driver's `size` option). "
        "The engine applies it only where /var/lib/docker/volumes is on xfs mounted with "
        "pquota; elsewhere every launch with a state_key fails with state_unavailable. "
        "0: no cap (a bot can fill the engine's disk through its state volume).",
    )
    api_timeout_s: float = Field(30.0, gt=0, description="Timeout of one Docker API call.")
    name_prefix: str = Field("botfleet-", description="Container names are prefix + bot id.")

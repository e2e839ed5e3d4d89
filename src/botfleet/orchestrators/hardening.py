"""The one hardening policy for bots' containers, rendered by each engine that runs containers.

Docker (orchestrators/docker/containers.py), Swarm (orchestrators/swarm/service_spec.py) and
Nomad's docker driver (orchestrators/nomad/jobspec.py) all render this model, so a bot is
confined the same way whichever engine runs it: a non-root user, a read-only root with a small
writable /tmp, every capability dropped, no new privileges (not on Swarm: its service API has no
such field), and CPU, memory and process limits. The operator sets the
limits through the backend's settings (`BOTFLEET_DOCKER_*`, `BOTFLEET_SWARM_*`: `ContainerLimits`;
`BOTFLEET_NOMAD_*`), and a bot's or its kind's `resources` replace its CPU and memory
(`with_resources`); the rest is policy, not a setting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from botfleet.orchestrators.config import BackendConfig

if TYPE_CHECKING:
    from botfleet.orchestrators.base import Resources


class Hardening(BaseModel):
    """How one bot's container is confined."""

    model_config = ConfigDict(frozen=True)

    user: str = Field("10001:10001", description="uid:gid the bot runs as (never root).")
    read_only_root: bool = True
    tmpfs_mb: int = Field(64, gt=0, description="Size of the writable /tmp.")
    pids_limit: int | None = Field(256, gt=0, description="Process limit per bot.")
    memory_mb: int | None = Field(512, gt=0, description="Memory limit per bot, in MiB.")
    cpus: float | None = Field(1.0, gt=0, description="CPU limit per bot, in CPUs.")
    cap_drop: tuple[str, ...] = ("ALL",)
    no_new_privileges: bool = True

    def with_resources(self, resources: Resources | None) -> Hardening:
        """This policy with one bot's own CPU and memory (its kind's) in place of the defaults."""
        if resources is None:
            return self
        update: dict[str, object] = {}
        if resources.cpu is not None:
            update["cpus"] = resources.cpu
        if resources.memory_mb is not None:
            update["memory_mb"] = resources.memory_mb
        return self.model_copy(update=update)

    @property
    def tmpfs_bytes(self) -> int:
        return self.tmpfs_mb * 1024 * 1024


class ContainerLimits(BackendConfig):
    """The per-bot limits of the backends that run each bot as a container of their own (docker,
    swarm), as settings, and the policy they make."""

    cpus: float | None = Field(1.0, gt=0, description="CPU limit per bot.")
    memory_mb: int | None = Field(512, gt=0, description="Memory limit per bot, in MiB.")
    pids_limit: int | None = Field(256, gt=0, description="Process limit per bot.")
    user: str = Field("10001:10001", description="uid:gid the bot runs as (never root).")
    tmpfs_mb: int = Field(64, gt=0, description="Size of the writable /tmp.")

    def hardening(self) -> Hardening:
        """The shared policy with this backend's limits."""
        return Hardening(
            user=self.user,
            tmpfs_mb=self.tmpfs_mb,
            pids_limit=self.pids_limit,
            memory_mb=self.memory_mb,
            cpus=self.cpus,
        )

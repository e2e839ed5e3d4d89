"""Settings of the nomad backend (environment: `BOTFLEET_NOMAD_*`)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from botfleet.orchestrators.config import BackendConfig
from botfleet.orchestrators.hardening import Hardening

MHZ_PER_CPU = 1000


def _runtime_tag() -> str:
    """The installed botfleet-server's version (pyproject.toml's): scripts/build-images.sh tags
    the runtime image with it.
    Never `latest`: Nomad's docker driver pulls a `:latest` image on every start, so a locally
    built one would never run (drivers/docker/driver.go)."""
    try:
        return version("botfleet-server")
    except PackageNotFoundError:  # a source tree that was never installed
        return "dev"


#: The runtime image the docker driver runs when a request names none.
DEFAULT_IMAGE = f"botfleet-runtime:{_runtime_tag()}"


class NomadOrchestratorConfig(BackendConfig):
    """Settings of the nomad backend. Its KillTimeout is the manager's BOTFLEET_STOP_GRACE_S
    (`stop_grace_s`, inherited); keep that within the Nomad clients' max_kill_timeout."""

    model_config = SettingsConfigDict(env_prefix="BOTFLEET_NOMAD_", extra="ignore")

    address: str = Field(
        "http://127.0.0.1:4646", description="Nomad HTTP API address (a server or client agent)."
    )
    token: str | None = Field(
        None,
        description="ACL token (X-Nomad-Token). Needs submit-job, read-job, list-jobs, read-logs, "
        "alloc-lifecycle (the SIGKILL after the stop grace, and of a second copy) and variables "
        "write/destroy on nomad/jobs/* in the namespace.",
    )
    namespace: str = Field(
        "default",
        min_length=1,
        description="Namespace of the jobs and of their secrets variables (always sent "
        "explicitly: NOMAD_NAMESPACE is ignored).",
    )
    region: str | None = Field(None, description="Region of the jobs; the agent's own when unset.")
    datacenters: list[str] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        description="Datacenters jobs may run in (globs); Nomad's own default, every one.",
    )
    driver: Literal["docker", "exec", "raw_exec"] = Field(
        "docker", description="Task driver: `docker` runs the image, `exec`/`raw_exec` a command."
    )
    default_image: str = Field(
        DEFAULT_IMAGE,
        description="Image (docker driver) when the request names none; a versioned tag, since "
        "Nomad pulls `:latest` on every start.",
    )
    command: list[str] = Field(
        default_factory=lambda: ["python3", "-m", "botfleet.runtime"],
        min_length=1,
        description="Command of exec/raw_exec tasks, on the Nomad client; JSON list.",
    )
    network_mode: str | None = Field(
        None,
        description="Docker network mode of docker tasks; unset: the driver's default (Docker's "
        "bridge). `host` is opt-in: it shares the client's network, every port of the client "
        "included. Bots must reach the manager and Redis from it.",
    )
    docker_user: str = Field("10001:10001", description="uid:gid of docker tasks (never root).")
    cpu_mhz: int = Field(500, gt=0, description="CPU per bot, in MHz (Nomad's unit).")
    memory_mb: int = Field(512, gt=0, description="Memory per bot, in MiB.")
    pids_limit: int = Field(256, gt=0, description="Process limit of docker tasks.")
    tmpfs_mb: int = Field(64, gt=0, description="Size of the writable /tmp of docker tasks.")
    job_prefix: str = Field("botfleet-", description="Job IDs are prefix + bot id + attempt.")
    logs_tail_bytes: int = Field(
        262144, gt=0, description="Bytes read from the end of each log stream for `logs`."
    )
    placement_wait_s: float = Field(
        3.0,
        ge=0,
        description="How long a launch waits for Nomad's first evaluation: a bot Nomad cannot "
        "place (no capacity, no eligible node) fails `no_capacity` with Nomad's reason. 0: never "
        "wait (the bot then stays `starting`, the reason in its start timeout's detail).",
    )
    stop_on_client_after_s: float = Field(
        20.0,
        gt=0,
        description="A Nomad client cut off from its servers stops the bot after this long "
        "(Disconnect.StopOnClientAfter). A running bot on a node that went down turns `unknown` "
        "and is never replaced (Disconnect.Replace false); one still starting is marked `lost` "
        "and Nomad places a replacement this long plus the kill timeout later, which botfleet "
        "kills as a second copy, and only then counts the bot ended (`node_lost`). Keep it "
        "below the manager's heartbeat budget, so a partitioned copy is gone before a restart "
        "relaunches.",
    )
    api_timeout_s: float = Field(15.0, gt=0, description="Timeout of one Nomad API call.")
    ca_cert: str | None = Field(None, description="CA bundle to verify an https address.")

    def hardening(self) -> Hardening:
        """The shared policy with this backend's limits (CPU kept in Nomad's MHz here)."""
        return Hardening(
            user=self.docker_user,
            tmpfs_mb=self.tmpfs_mb,
            pids_limit=self.pids_limit,
            memory_mb=self.memory_mb,
            cpus=self.cpu_mhz / MHZ_PER_CPU,
        )

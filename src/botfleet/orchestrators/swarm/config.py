"""Settings of the swarm backend (environment: `BOTFLEET_SWARM_*`)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from botfleet.orchestrators.hardening import ContainerLimits


class SwarmOrchestratorConfig(ContainerLimits):
    """Settings of the swarm backend: one Docker Swarm service per bot attempt, created through a
    manager node's engine. The stop grace every task is created with is the manager's
    BOTFLEET_STOP_GRACE_S (`stop_grace_s`, inherited)."""

    model_config = SettingsConfigDict(env_prefix="BOTFLEET_SWARM_", extra="ignore")

    base_url: str | None = Field(
        None,
        description="Address of a swarm manager node's Docker Engine; DOCKER_HOST or the local "
        "socket when unset. Images are resolved to their id on this engine.",
    )
    default_image: str = Field(
        "botfleet-runtime:latest",
        description="Image for bots whose request names none. Every node must hold the same "
        "image (docker save | docker load): services name it by id, so no node pulls it.",
    )
    networks: list[str] = Field(
        ["host"],
        min_length=1,
        description='Networks the services join, JSON list. `["host"]` (the default) shares '
        "each node's network, so bots reach the manager and Redis at the addresses their nodes "
        "see (BOTFLEET_CALLBACK_URL, BOTFLEET_BOT_REDIS_URL). Other names are existing swarm "
        "(overlay) networks; services use DNS round-robin (no VIP: it needs IPVS).",
    )
    node_engines: dict[str, str] = Field(
        default_factory=dict,
        description="Each node's own Docker Engine, by node hostname, JSON object, e.g. "
        '`{"n1": "tcp://10.0.0.11:2376"}`. Logs, stops with the exact grace and `purge_state` '
        "go to the engine of the node that runs the bot: `service logs` fails for a node after "
        "a partition (moby#35011). Without one, the node the manager's engine runs on is still "
        "reached, others through the swarm only (see docs/how-to/swarm.md).",
    )
    user: str = Field(
        "10001:10001",
        description="uid:gid the bot runs as (never root), numeric: its secrets file is made "
        "readable by this uid alone.",
    )
    reserve_resources: bool = Field(
        False,
        description="Also reserve each bot's CPU and memory limit on its node, so Swarm places "
        "no more bots on a node than its resources hold (pending `insufficient resources` "
        "beyond).",
    )
    api_timeout_s: float = Field(30.0, gt=0, description="Timeout of one Docker API call.")
    name_prefix: str = Field(
        "botfleet-",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,19}$",
        description="Services and their secrets are named prefix + bot id + attempt; node labels "
        "that pin state volumes start with it too.",
    )

    @field_validator("user")
    @classmethod
    def _numeric_user(cls, user: str) -> str:
        uid, _, gid = user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()) or uid == "0":
            raise ValueError("must be a numeric, non-root uid[:gid], e.g. 10001:10001")
        return user

    @property
    def uid_gid(self) -> tuple[str, str]:
        uid, _, gid = self.user.partition(":")
        return uid, gid or uid

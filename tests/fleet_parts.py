"""The fleet's parts as the manager wires them (`botfleet.manager.fleet_parts`), for tests and
benches that drive the services and the loops directly, without a manager process: a fresh
sealing key, the Redis of `settings.redis_url`, no credential cache."""

from __future__ import annotations

from cryptography.fernet import Fernet
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.sealing import SecretBox
from botfleet.manager.core.settings import Settings
from botfleet.manager.fleet_parts import FleetParts, build_fleet_parts
from botfleet.manager.messaging.bot_acl import BotRedisUsers
from botfleet.orchestrators.base import Orchestrator

__all__ = ["FleetParts", "build_fleet"]


def build_fleet(
    sessions: sessionmaker[Session],
    orchestrator: Orchestrator,
    settings: Settings,
    *,
    redis_users: BotRedisUsers | None = None,
    box: SecretBox | None = None,
    fleet_id: str = "test",
) -> FleetParts:
    """The parts over `sessions`; close them with `close()` (the caller closes `orchestrator`
    and `redis_users`)."""
    return build_fleet_parts(
        sessions,
        orchestrator,
        settings,
        fleet_id=fleet_id,
        box=box or SecretBox([Fernet.generate_key().decode()]),
        redis_url=settings.redis_url or "",
        redis_users=redis_users,
        credentials=None,
    )

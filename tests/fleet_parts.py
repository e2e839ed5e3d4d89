"""The fleet's parts as the manager wires them (`botfleet.manager.fleet_parts`), for tests and
benches that drive the services and the loops directly, without a manager process: a fresh
sealing key, the Redis of `settings.redis_url`, no credential cache."""

from __future__ import annotations

from cryptography.fernet import Fernet
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.background.exit_watch import FIRST_CHECK_S, ExitWatch
from botfleet.manager.core.db import transaction
from botfleet.manager.core.sealing import SecretBox
from botfleet.manager.core.settings import Settings
from botfleet.manager.fleet_parts import FleetParts, build_fleet_parts
from botfleet.manager.messaging.bot_acl import BotRedisUsers
from botfleet.manager.schemas.api import CallbackIn
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services.callbacks import AwaitedExit, apply_callback, awaited_exit
from botfleet.orchestrators.base import Orchestrator
from tests.fakes import FakeOrchestrator

__all__ = ["FleetParts", "build_fleet", "exited", "finish_exit", "post_callback"]


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


def post_callback(
    fleet: FleetParts, bot_id: str, event: str, **fields: object
) -> AwaitedExit | None:
    """One callback as the callback route applies it; the exit it leaves to wait for, if any."""
    body = CallbackIn(event=event, **fields)
    with transaction(fleet.sessions) as session:
        bot = bot_records.lock_bot(session, bot_id)
        apply_callback(session, bot, body)
        return awaited_exit(bot, body)


def exited(fleet: FleetParts, bot_id: str, exit_code: int, **fields: object) -> None:
    """The runtime's `exited`, as a real runtime sends it: then its process ends with the code
    it reported (the fake engine's workload exits), and the exit watch ends the bot."""
    awaited = post_callback(fleet, bot_id, "exited", exit_code=exit_code, **fields)
    if awaited is not None:
        orchestrator = fleet.orchestrator
        assert isinstance(orchestrator, FakeOrchestrator)
        orchestrator.exit(awaited.runtime_ref, exit_code)
        finish_exit(fleet, awaited)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def finish_exit(fleet: FleetParts, awaited: AwaitedExit) -> None:
    """One look of an exit watch at `awaited`, as the manager's takes it soon after the
    report: it ends the bot if the engine confirms the workload is gone."""
    clock = _Clock()
    watch = ExitWatch(
        sessions=fleet.sessions, settings=fleet.settings, launcher=fleet.launcher, clock=clock
    )
    watch.watch(awaited)
    clock.now += FIRST_CHECK_S
    watch.check_due()
    watch.close()

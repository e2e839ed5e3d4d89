"""The fleet's parts, wired once: the launcher (the engine, on its own threads), the command
publisher (Redis), users' requests (`BotRequests`) and the after-commit listeners over one
sessionmaker. The app builds them this way at start-up (`app.py`); tests and benches that drive
the services and loops without a manager process build them through the same function."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager import after_commit
from botfleet.manager.background.housekeeping import Housekeeping
from botfleet.manager.background.reconciler import Context, Reconciler
from botfleet.manager.core.sealing import SecretBox
from botfleet.manager.core.settings import Settings
from botfleet.manager.hot_path.credentials import CredentialCache
from botfleet.manager.hot_path.heartbeat_batches import HeartbeatBuffer
from botfleet.manager.messaging.bot_acl import BotRedisUsers
from botfleet.manager.messaging.command_bus import CommandBus
from botfleet.manager.services.bot_requests import BotRequests
from botfleet.manager.services.command_publisher import CommandPublisher
from botfleet.manager.services.launcher import Launcher
from botfleet.orchestrators.base import Orchestrator


@dataclass
class FleetParts:
    sessions: sessionmaker[Session]
    settings: Settings
    launcher: Launcher
    publisher: CommandPublisher
    bots: BotRequests
    bus: CommandBus
    listeners: after_commit.AfterCommit

    @property
    def orchestrator(self) -> Orchestrator:
        return self.launcher.orchestrator

    @property
    def box(self) -> SecretBox:
        return self.launcher.box

    @property
    def redis_users(self) -> BotRedisUsers | None:
        return self.launcher.redis_users

    def context(self) -> Context:
        """What the reconciler's per-state functions are handed."""
        return Context(
            sessions=self.sessions, settings=self.settings, launcher=self.launcher, bots=self.bots
        )

    def reconciler(self, heard: HeartbeatBuffer | None = None) -> Reconciler:
        """`heard`: this replica's heartbeat buffer (heard, not stored yet: never silence)."""
        return Reconciler(sessions=self.sessions, settings=self.settings,
                          launcher=self.launcher, bots=self.bots, heard=heard)  # fmt: skip

    def housekeeping(self) -> Housekeeping:
        return Housekeeping(
            sessions=self.sessions,
            settings=self.settings,
            launcher=self.launcher,
            publisher=self.publisher,
        )

    def close(self) -> None:
        """As the manager stops: the launcher's threads first (their last launches still
        commit, so the listeners must be there), then the listeners, then the bus."""
        self.launcher.close()
        self.listeners.close()
        self.bus.close()


def build_fleet_parts(
    sessions: sessionmaker[Session],
    orchestrator: Orchestrator,
    settings: Settings,
    *,
    fleet_id: str,
    box: SecretBox,
    redis_url: str,
    redis_users: BotRedisUsers | None,
    credentials: CredentialCache | None,
) -> FleetParts:
    """The parts over `sessions`, with every after-commit listener installed on it; `close()`
    them (the caller closes `orchestrator`, `redis_users` and `credentials`)."""
    bus = CommandBus(redis_url)
    launcher = Launcher(
        fleet_id=fleet_id,
        sessions=sessions,
        orchestrator=orchestrator,
        settings=settings,
        box=box,
        redis_users=redis_users,
    )
    publisher = CommandPublisher(sessions=sessions, bus=bus, retry_s=settings.command_retry_s)
    bots = BotRequests(
        sessions=sessions, settings=settings, box=box, launcher=launcher, publisher=publisher
    )
    listeners = after_commit.install(
        sessions,
        redis_url=redis_url,
        credentials=credentials,
        redis_users=redis_users,
        submit=launcher.submit,
    )
    return FleetParts(sessions, settings, launcher, publisher, bots, bus, listeners)

"""The app's state: one typed object, built once at start-up (`manager/app.py`'s lifespan).

Routes and the dashboard get it through `http/deps.py` (`AppStateDep`); code that has a request
but is no dependency (a middleware, a page rebuilt after a refusal) calls `app_state(request)`.
It is kept on the app as the one attribute `app.state.botfleet`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from botfleet.manager.background.exit_watch import ExitWatch
from botfleet.manager.background.loops import IntervalLoop
from botfleet.manager.core.sealing import SecretBox
from botfleet.manager.core.settings import Settings
from botfleet.manager.hot_path.credentials import CredentialCache
from botfleet.manager.hot_path.heartbeats import Heartbeats
from botfleet.manager.hot_path.key_usage import KeyUsage
from botfleet.manager.hot_path.reports import Reports
from botfleet.manager.messaging.command_bus import CommandBus
from botfleet.manager.messaging.event_feed import EventWaker
from botfleet.manager.services.bot_requests import BotRequests
from botfleet.manager.services.command_publisher import CommandPublisher
from botfleet.manager.services.launcher import Launcher
from botfleet.orchestrators.base import Orchestrator

if TYPE_CHECKING:  # rate_limit's middleware imports this module
    from botfleet.manager.http.rate_limit import RateLimiter

ATTRIBUTE = "botfleet"


@dataclass(frozen=True)
class AppState:
    """What the routes, the dashboard and the middlewares use, built together at start-up."""

    settings: Settings  # with the embedded Redis' URL when the manager started one
    sessions: sessionmaker[Session]
    admin_token: str
    bots: BotRequests  # start, stop, reconfigure…: what users ask of their bots
    launcher: Launcher  # the engine: launches, signals, listings, states
    publisher: CommandPublisher
    credentials: CredentialCache | None  # None: BOTFLEET_CREDENTIAL_CACHE_SIZE=0
    key_usage: KeyUsage
    heartbeats: Heartbeats
    reports: Reports
    event_waker: EventWaker
    rate_limiter: RateLimiter
    loops: tuple[IntervalLoop, ...]  # every periodic job, for /readyz and the health page
    exit_watch: ExitWatch  # bots whose runtime reported `exited`, until their workload is gone

    # Derived, not held twice: the parts that own them say which.
    @property
    def box(self) -> SecretBox:
        """Bot secrets and webhook signing secrets, sealed at rest (the launcher's)."""
        return self.launcher.box

    @property
    def orchestrator(self) -> Orchestrator:
        return self.launcher.orchestrator

    @property
    def bus(self) -> CommandBus:
        return self.publisher.bus


def install(app: Starlette, state: AppState) -> None:
    setattr(app.state, ATTRIBUTE, state)


def started(app: object) -> AppState | None:
    """The app's state, or None before its start-up has built it."""
    state = getattr(getattr(app, "state", None), ATTRIBUTE, None)
    return state if isinstance(state, AppState) else None


def app_state(connection: HTTPConnection) -> AppState:
    """The state of the app serving `connection` (a request)."""
    state = started(connection.app)
    if state is None:
        raise RuntimeError("the manager has not started: no app state yet")
    return state

"""All manager settings, read from `BOTFLEET_*` environment variables, one module per area.

`Settings` composes the areas into one flat object (`settings.heartbeat_s`,
`BOTFLEET_HEARTBEAT_S`), created through the cached `get_settings()`, never at import time, so
tests and the CLI can set the environment first.
"""

from __future__ import annotations

from functools import lru_cache

from botfleet.manager.core.settings.bots import HotPathSettings
from botfleet.manager.core.settings.database import DatabaseSettings
from botfleet.manager.core.settings.limits import LimitSettings
from botfleet.manager.core.settings.logs import LogSettings
from botfleet.manager.core.settings.orchestrator import OrchestratorSettings
from botfleet.manager.core.settings.redis import RedisSettings
from botfleet.manager.core.settings.retention import RetentionSettings
from botfleet.manager.core.settings.server import ServerSettings
from botfleet.manager.core.settings.webhooks import WebhookSettings

__all__ = ["Settings", "get_settings"]


class Settings(
    WebhookSettings,
    RetentionSettings,
    LogSettings,
    LimitSettings,
    HotPathSettings,
    OrchestratorSettings,
    RedisSettings,
    DatabaseSettings,
    ServerSettings,
):
    """Every area in one object (the bases are listed last area first: pydantic orders the
    fields from the last base to the first)."""

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'botfleet.db').resolve()}"

    def resolved_callback_url(self) -> str:
        """Where bots call back: the callback listener (never the API's port, which answers
        /internal/… with 404)."""
        return self.callback_url or f"http://{self.host}:{self.callback_port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()

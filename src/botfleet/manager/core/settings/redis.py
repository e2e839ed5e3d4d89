"""Redis, which carries commands to the bots, and what each bot may do there."""

from __future__ import annotations

from pydantic import Field

from botfleet.manager.core.settings.area import SettingsArea


class RedisSettings(SettingsArea):
    redis_url: str | None = Field(
        None, description="Redis for bot commands; an embedded redis-server when unset."
    )
    bot_redis_url: str | None = Field(
        None, description="Redis URL handed to bots, when they reach Redis by another address."
    )
    bot_redis_acl: bool = Field(
        True,
        description="Give each bot a Redis ACL user of its own (manager/messaging/bot_acl.py): "
        "it may subscribe to its own command channel and nothing else. Needs Redis ≥ 6.2 and a "
        "manager user allowed to run ACL. false: bots get the shared URL (BOTFLEET_BOT_REDIS_URL "
        "or BOTFLEET_REDIS_URL) and can read and publish on every bot's channel.",
    )

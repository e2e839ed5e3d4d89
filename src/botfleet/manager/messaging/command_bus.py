"""Publishing commands to bots over Redis pub/sub.

Redis only wakes a bot up: the command is already stored when it is published, so a failed
publish is logged and retried later, never an error for the caller.
"""

from __future__ import annotations

import logging

import redis

from botfleet.runtime.protocol import CommandMessage, command_channel, signed_json

log = logging.getLogger(__name__)


class CommandBus:
    def __init__(self, url: str) -> None:
        self.url = url
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=2, health_check_interval=30
        )

    def publish(self, bot_id: str, message: CommandMessage, *, key: str) -> int:
        """Publish `message` signed with `key` (the bot's token hash: the runtime drops a
        message without the right signature); return how many subscribers received it.
        Raises redis.RedisError."""
        return int(self._client.publish(command_channel(bot_id), signed_json(message, key)))

    def ping(self) -> None:
        self._client.ping()

    def close(self) -> None:
        self._client.close()

"""The runtime's settings, read once from the environment variables of CONTRACT.md.

Parsing everything up front means a misconfigured launch fails at once with the variable's
name, instead of half-way through a meeting.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot_runtime.protocol import command_channel

DEFAULT_HEARTBEAT_S = 10.0


class RuntimeConfigError(ValueError):
    """A required variable is missing or a value cannot be parsed."""


@dataclass(frozen=True)
class RuntimeEnv:
    """Everything the runtime is started with. `token` and `secrets` stay out of the repr."""

    bot_id: str
    token: str = field(repr=False)
    callback_url: str
    redis_url: str = field(repr=False)  # may embed a Redis password
    command_channel: str
    bot: str
    config: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    heartbeat_s: float = DEFAULT_HEARTBEAT_S

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> RuntimeEnv:
        bot_id = _required(environ, "BOTFLEET_BOT_ID")
        return cls(
            bot_id=bot_id,
            token=_required(environ, "BOTFLEET_BOT_TOKEN"),
            callback_url=_required(environ, "BOTFLEET_CALLBACK_URL").rstrip("/"),
            redis_url=_required(environ, "BOTFLEET_REDIS_URL"),
            command_channel=environ.get("BOTFLEET_COMMAND_CHANNEL") or command_channel(bot_id),
            bot=_required(environ, "BOTFLEET_BOT"),
            config=_json_object(environ, "BOTFLEET_BOT_CONFIG"),
            secrets=_secrets(environ),
            heartbeat_s=_heartbeat(environ),
        )


def _required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise RuntimeConfigError(f"{name} is required but not set")
    return value


def _json_object(environ: Mapping[str, str], name: str) -> dict[str, Any]:
    raw = environ.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        # JSONDecodeError names a position, never the text: the value may hold secrets.
        raise RuntimeConfigError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RuntimeConfigError(f"{name} must be a JSON object")
    return value


def _secrets(environ: Mapping[str, str]) -> dict[str, str]:
    secrets = _json_object(environ, "BOTFLEET_BOT_SECRETS")
    if not all(isinstance(v, str) for v in secrets.values()):
        raise RuntimeConfigError("BOTFLEET_BOT_SECRETS must map names to strings")
    return secrets


def _heartbeat(environ: Mapping[str, str]) -> float:
    raw = environ.get("BOTFLEET_HEARTBEAT_S", "").strip()
    if not raw:
        return DEFAULT_HEARTBEAT_S
    try:
        value = float(raw)
    except ValueError:
        raise RuntimeConfigError(f"BOTFLEET_HEARTBEAT_S must be a number, got {raw!r}") from None
    if not value > 0:
        raise RuntimeConfigError(f"BOTFLEET_HEARTBEAT_S must be positive, got {raw!r}")
    return value

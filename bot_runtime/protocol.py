"""The command protocol between the manager and a bot, shared by both sides.

This module is the protocol's home: one JSON message per command on the channel
`bot_commands:{bot_id}`, `{"id", "action", "config"?, "config_version"?, "issued_at"}`, and the
names of the callback events. The manager imports this module; this module never imports the
manager. Plain dataclasses keep the runtime free of dependencies beyond redis and httpx.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

CHANNEL_TEMPLATE: Final = "bot_commands:{bot_id}"

ACTION_RECONFIGURE: Final = "reconfigure"
ACTION_LEAVE: Final = "leave"

# Callback events, runtime → manager.
EVENT_STARTED: Final = "started"
EVENT_HEARTBEAT: Final = "heartbeat"
EVENT_LEAVING: Final = "leaving"
EVENT_EXITED: Final = "exited"


class ProtocolError(ValueError):
    """A message that is not a valid command envelope."""


def command_channel(bot_id: str) -> str:
    return CHANNEL_TEMPLATE.format(bot_id=bot_id)


@dataclass(frozen=True)
class CommandMessage:
    """One command as it travels over Redis and through the pending-commands endpoint."""

    id: str
    action: str
    issued_at: str
    config: dict[str, Any] | None = None
    config_version: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "action": self.action, "issued_at": self.issued_at}
        if self.config is not None:
            out["config"] = self.config
        if self.config_version is not None:
            out["config_version"] = self.config_version
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any) -> CommandMessage:
        """Parse an envelope. Unknown actions parse fine: the receiver decides to ignore them."""
        if not isinstance(data, dict):
            raise ProtocolError("a command must be a JSON object")
        cid, action = data.get("id"), data.get("action")
        if not isinstance(cid, str) or not cid:
            raise ProtocolError("a command needs a string 'id'")
        if not isinstance(action, str) or not action:
            raise ProtocolError("a command needs a string 'action'")
        config = data.get("config")
        if config is not None and not isinstance(config, dict):
            raise ProtocolError("'config' must be an object")
        version = data.get("config_version")
        if version is not None and not isinstance(version, int):
            raise ProtocolError("'config_version' must be an integer")
        known = {"id", "action", "issued_at", "config", "config_version"}
        return cls(
            id=cid,
            action=action,
            issued_at=str(data.get("issued_at") or ""),
            config=config,
            config_version=version,
            extra={k: v for k, v in data.items() if k not in known},
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> CommandMessage:
        try:
            data = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"not JSON: {exc}") from exc
        return cls.from_dict(data)


def describe_error(exc: BaseException) -> str:
    """`ExceptionType: message`: how errors are written in callbacks' `detail` and ack `error`."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

"""The command protocol between the manager and a bot, shared by both sides.

This module is the protocol's home: one JSON message per command on the channel
`bot_commands:{bot_id}`, `{"id", "action", "config"?, "config_version"?, "payload"?, "issued_at",
"sig"}`,
and the names of the callback events. `sig` is an HMAC only the manager and the bot can compute
(`sign_command` / `verify_command`), so a message the manager did not issue is never applied,
even on a Redis without per-bot ACLs. The manager imports this module; this module never imports the
manager. Plain dataclasses keep the runtime free of dependencies beyond the standard library.

`hashlib` and `hmac` are imported where they are used: they start OpenSSL's digests (about
0.7 MiB per process), which a bot that never receives a command does not need.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

CHANNEL_TEMPLATE: Final = "bot_commands:{bot_id}"
SIGNATURE_FIELD: Final = "sig"

ACTION_RECONFIGURE: Final = "reconfigure"
ACTION_LEAVE: Final = "leave"
#: Tells the runtime to fetch the bot's new secrets over HTTP: the message never carries them.
ACTION_SECRETS: Final = "secrets"
#: Actions the runtime handles itself; every other action is the bot's own (`Bot.on_command`).
RESERVED_ACTIONS: Final = frozenset({ACTION_RECONFIGURE, ACTION_LEAVE, ACTION_SECRETS})
#: The error of a custom command the bot does not know.
UNKNOWN_ACTION: Final = "unknown_action"
MAX_RESULT_BYTES: Final = 64 * 1024  # a custom command's JSON result
MAX_REPORT_BYTES: Final = 16 * 1024  # a report's JSON data

# Callback events, runtime → manager.
EVENT_STARTED: Final = "started"
EVENT_HEARTBEAT: Final = "heartbeat"
EVENT_LEAVING: Final = "leaving"
EVENT_EXITED: Final = "exited"
EVENT_REPORT: Final = "report"


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
    payload: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "action": self.action, "issued_at": self.issued_at}
        if self.config is not None:
            out["config"] = self.config
        if self.config_version is not None:
            out["config_version"] = self.config_version
        if self.payload is not None:
            out["payload"] = self.payload
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
        payload = data.get("payload")
        if payload is not None and not isinstance(payload, dict):
            raise ProtocolError("'payload' must be an object")
        known = {
            "id",
            "action",
            "issued_at",
            "config",
            "config_version",
            "payload",
            SIGNATURE_FIELD,
        }
        return cls(
            id=cid,
            action=action,
            issued_at=str(data.get("issued_at") or ""),
            config=config,
            config_version=version,
            payload=payload,
            extra={k: v for k, v in data.items() if k not in known},
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> CommandMessage:
        try:
            data = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"not JSON: {exc}") from exc
        return cls.from_dict(data)


def signing_key(token: str) -> str:
    """The key a bot's Redis messages are signed with: the SHA-256 of its token. The manager
    stores exactly this digest (never the token) and the bot computes it from its own token, so
    no other bot holds it and it never travels anywhere."""
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def sign_command(fields: dict[str, Any], key: str) -> str:
    """Hex HMAC-SHA256 over the canonical JSON (sorted keys, compact) of every field but `sig`."""
    unsigned = {k: v for k, v in fields.items() if k != SIGNATURE_FIELD}
    import hashlib
    import hmac

    return hmac.new(key.encode(), _canonical(unsigned), hashlib.sha256).hexdigest()


def signed_json(message: CommandMessage, key: str) -> str:
    """The message as it is published on Redis: its fields plus their signature."""
    fields = message.to_dict()
    fields[SIGNATURE_FIELD] = sign_command(fields, key)
    return json.dumps(fields, separators=(",", ":"))


def verify_command(fields: Any, key: str) -> bool:
    """True when `fields` (a decoded message) carries the signature of exactly its other fields
    under `key`; False when it is missing, malformed or wrong. Constant-time."""
    if not isinstance(fields, dict):
        return False
    sig = fields.get(SIGNATURE_FIELD)
    if not isinstance(sig, str):
        return False
    try:
        expected = sign_command(fields, key)
    except (TypeError, ValueError):  # not canonically serializable: not ours
        return False
    import hmac

    return hmac.compare_digest(sig.encode(), expected.encode())


def describe_error(exc: BaseException) -> str:
    """`ExceptionType: message`: how errors are written in callbacks' `detail` and ack `error`."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def json_size(value: Any) -> int:
    """The size of `value` as compact JSON, how the result and report limits are measured;
    raises TypeError or ValueError for a value JSON cannot hold."""
    return len(json.dumps(value, separators=(",", ":"), allow_nan=False).encode())

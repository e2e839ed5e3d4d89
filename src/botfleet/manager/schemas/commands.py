"""Commands to a bot: a custom command sent through the API, and any command as listed."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from botfleet.manager.schemas.bounds import Strict, check_config

#: Actions only the manager sends: a custom command may not be named after one.
RESERVED_ACTION_NAMES = frozenset({"reconfigure", "leave", "secrets"})


class CommandCreate(Strict):
    """`POST /bots/{id}/commands`: a custom command for the bot's `on_command`."""

    action: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")] = Field(
        ...,
        description="snake_case, at most 32 characters; not `reconfigure`, `leave` or `secrets`.",
        examples=["echo"],
    )
    payload: dict[str, Any] = Field(
        default_factory=dict,
        description="A JSON object handed to the bot with the action (at most 64 KiB).",
        examples=[{"text": "hello"}],
    )

    @field_validator("action")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_ACTION_NAMES:
            raise ValueError(f"{value!r} is the manager's own command; use its own route")
        return value

    _payload = field_validator("payload")(check_config)


class CommandPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    bot_id: str
    action: str
    status: Literal["pending", "delivered", "acked", "failed", "expired"]
    actor: str | None = Field(None, description="Who sent it: `key:<key id>`, `admin`, ...")
    config: dict[str, Any] | None = None
    config_version: int | None = None
    payload: dict[str, Any] | None = Field(None, description="A custom command's payload.")
    result: Any = Field(None, description="A custom command's answer from the bot (JSON).")
    error: str | None = Field(
        None,
        description="Why it failed: the bot's error message, `unknown_action` (the bot has no "
        "such command), `result_too_large`, or why it expired.",
    )
    created_at: datetime
    delivered_at: datetime | None = None
    acked_at: datetime | None = None
    expires_at: datetime

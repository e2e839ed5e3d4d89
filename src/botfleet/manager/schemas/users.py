"""Users, their API keys, and the admin's audit log (`/admin/…`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from botfleet.manager.schemas.bounds import ShortText, Strict
from botfleet.manager.schemas.restart import RestartPolicy


class UserCreate(Strict):
    # ASCII spelled out: `\w` is Unicode in the validator but ASCII in the JSON Schema we publish.
    name: Annotated[
        str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@\-]+$")
    ]
    max_concurrent_bots: int | None = Field(None, ge=0, le=1_000_000)


class UserUpdate(Strict):
    """Only the fields sent change."""

    max_concurrent_bots: int | None = Field(None, ge=0, le=1_000_000)
    disabled: bool | None = Field(
        None,
        description="true: every key of the user answers 401 at once (its bots run on); "
        "false: enabled again.",
    )
    default_restart: RestartPolicy | None = Field(
        None,
        description="The restart policy of the user's bots whose POST /bots names none "
        "(relaunches keep their own); `null` removes it.",
    )
    queue_by_default: bool | None = Field(
        None,
        description="true: the user's bots over a limit wait `queued` unless their POST says "
        '`"queue": false`; false: they are refused 429 unless it says `"queue": true`.',
    )


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    max_concurrent_bots: int
    created_at: datetime
    disabled_at: datetime | None = None
    default_restart: dict[str, Any] | None = None
    queue_by_default: bool = False


class UserWithKey(UserPublic):
    api_key: str = Field(description="Shown this once; only its hash is stored.")


Scope = Literal["bots:read", "bots:write"]


def _every_scope() -> list[Scope]:
    return ["bots:read", "bots:write"]


class ApiKeyCreate(Strict):
    name: ShortText | None = None
    scopes: list[Scope] = Field(
        default_factory=_every_scope,
        min_length=1,
        max_length=2,
        description="`bots:read` alone: every write answers 403 `insufficient_scope`.",
    )
    expires_in_s: int | None = Field(
        None, gt=0, le=10 * 365 * 86_400, description="The key answers 401 after this long."
    )


class ApiKeyPublic(BaseModel):
    """A key as listed: never the key itself (only its hash is stored)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    user_id: str
    prefix: str = Field(description="The key's first characters, to recognise it.")
    name: str | None
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None = Field(
        None, description="Within a minute: written at most once a minute per key."
    )
    expires_at: datetime | None

    @field_validator("scopes", mode="before")
    @classmethod
    def _spaced(cls, value: Any) -> Any:
        return value.split() if isinstance(value, str) else value


class ApiKeyCreated(ApiKeyPublic):
    api_key: str = Field(description="Shown this once; only its hash is stored.")


class AuditEntry(BaseModel):
    """One admin action."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    at: datetime
    action: str = Field(
        description="`user_created`, `user_updated` (limit changed, disabled or enabled), "
        "`key_created`, `key_revoked`, `capacity_set`, `capacity_removed`."
    )
    target: str = Field(description="`user:<id>`, `key:<id>` or `capacity:<id>`.")
    user_id: str | None
    change: dict[str, Any] = Field(description="What changed; `[old, new]` for an update.")

"""Request and response bodies of the public API (the README's "A walk through the API"; the
OpenAPI page at `/docs` is generated from these)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

BOT_REF = re.compile(r"^(?:[a-z][a-z0-9_]*|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$")
LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$")
MAX_LABELS = 32
MAX_CONFIG_BYTES = 64 * 1024
MAX_CONFIG_DEPTH = 16
MAX_SECRETS = 64
# A Docker/OCI image reference: [registry[:port]/]path[:tag][@digest], lower-case path.
IMAGE_REF = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$",
    re.ASCII,  # tags are ASCII: `\w` would otherwise take any letter
)

ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


class Strict(BaseModel):
    """Request bodies: unknown fields and type coercion ("5" for 5, "yes" for true) refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class RestartPolicy(Strict):
    max_retries: int = Field(0, ge=0, le=100)
    backoff_s: float = Field(5.0, ge=0, le=86_400)


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def check_config(value: dict[str, Any]) -> dict[str, Any]:
    """Bounded size and nesting, so one bot's config cannot weigh on everyone's database."""
    if _json_size(value) > MAX_CONFIG_BYTES:
        raise ValueError(f"config is larger than {MAX_CONFIG_BYTES} bytes")
    if _depth(value) > MAX_CONFIG_DEPTH:
        raise ValueError(f"config is nested deeper than {MAX_CONFIG_DEPTH} levels")
    return value


class BotCreate(Strict):
    bot: str = Field(
        ..., max_length=200, description="A built-in bot name (e.g. `demo`) or `module:Class`."
    )
    image: Annotated[str, StringConstraints(min_length=1, max_length=300)] | None = None
    name: ShortText | None = None
    platform: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    native_id: Annotated[str, StringConstraints(min_length=1, max_length=300)] | None = None
    config: dict[str, Any] = Field(
        ...,
        description="The bot's config, a JSON object (`{}` for none); the bot reads it at start.",
    )
    secrets: dict[str, str] | None = None
    labels: dict[str, Annotated[str, StringConstraints(max_length=300)]] = Field(
        default_factory=dict
    )
    start_at: datetime | None = Field(None, strict=False)  # ISO text is the JSON form
    max_duration_s: int | None = Field(None, gt=0, le=30 * 86_400)
    restart: RestartPolicy | None = None
    dedup_key: ShortText | None = None

    @field_validator("bot")
    @classmethod
    def _bot_ref(cls, value: str) -> str:
        if not BOT_REF.match(value):
            raise ValueError("must be a built-in bot name like `demo` or `module:Class`")
        return value

    _config = field_validator("config")(check_config)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and not IMAGE_REF.match(value):
            raise ValueError("must be an image reference like `registry/name:tag`")
        return value

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            if len(value) > MAX_SECRETS:
                raise ValueError(f"at most {MAX_SECRETS} secrets")
            if _json_size(value) > MAX_CONFIG_BYTES:
                raise ValueError(f"secrets are larger than {MAX_CONFIG_BYTES} bytes")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels")
        for key in value:
            if not LABEL_KEY.match(key):
                raise ValueError(f"label key {key!r} must match {LABEL_KEY.pattern}")
        return value

    @field_validator("start_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("start_at needs a time zone, e.g. 2026-01-01T10:00:00Z")
        return value


class BotPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    status: str
    status_reason: str | None
    exit_code: int | None
    attempt: int
    orchestrator: str
    runtime_ref: str | None
    name: str | None
    bot: str
    image: str | None
    platform: str | None
    native_id: str | None
    config: dict[str, Any]
    config_version: int
    labels: dict[str, str]
    dedup_key: str | None = None
    start_at: datetime | None = Field(None, strict=False)  # ISO text is the JSON form
    max_duration_s: int | None = None
    created_at: datetime
    started_at: datetime | None
    active_at: datetime | None
    ended_at: datetime | None


Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    """Every list answers a page (`manager/services/pages.py`): nothing unbounded is built."""

    items: list[Item]
    next_cursor: str | None = Field(
        None, description="Pass as `?cursor=` for the next page; null on the last one."
    )


BotPage = Page[BotPublic]


class TransitionPublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    from_: str = Field(alias="from")
    to: str
    reason: str
    source: str
    detail: str
    attempt: int
    at: datetime


class AttemptPublic(BaseModel):
    """One launch of a bot, with its own workload reference and exit code."""

    model_config = ConfigDict(from_attributes=True)

    attempt: int
    runtime_ref: str | None
    exit_code: int | None
    outcome: str | None
    launched_at: datetime
    ended_at: datetime | None


class ConfigPatch(Strict):
    """`PATCH /bots/{id}/config`: a JSON Merge Patch (RFC 7396) of the bot's config."""

    config: dict[str, Any] = Field(
        ...,
        description=(
            "Merged into the bot's latest config: objects merge key by key (nested ones too), "
            "`null` deletes a key, any other value (arrays included) replaces it."
        ),
        examples=[{"lang": "de", "old_key": None}],
    )

    _config = field_validator("config")(check_config)


class ConfigReplace(Strict):
    """`PUT /bots/{id}/config`: the bot's whole new config."""

    config: dict[str, Any] = Field(
        ..., description="The bot's new config, replacing the old one entirely."
    )

    _config = field_validator("config")(check_config)


class CommandPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    bot_id: str
    action: str
    status: Literal["pending", "delivered", "acked", "failed", "expired"]
    config: dict[str, Any] | None = None
    config_version: int | None = None
    error: str | None = None
    created_at: datetime
    delivered_at: datetime | None = None
    acked_at: datetime | None = None
    expires_at: datetime


class CallbackIn(Strict):
    event: Literal["started", "heartbeat", "leaving", "exited"]
    exit_code: int | None = Field(None, ge=-255, le=255)
    reason: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")] | None = None
    detail: Annotated[str, StringConstraints(max_length=4000)] | None = None


class CallbackOut(BaseModel):
    status: str
    changed: bool


class AckIn(Strict):
    ok: bool
    error: Annotated[str, StringConstraints(max_length=4000)] | None = None


class UserCreate(Strict):
    # ASCII spelled out: `\w` is Unicode in the validator but ASCII in the JSON Schema we publish.
    name: Annotated[
        str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@\-]+$")
    ]
    max_concurrent_bots: int | None = Field(None, ge=0, le=1_000_000)


class UserUpdate(Strict):
    max_concurrent_bots: int = Field(..., ge=0, le=1_000_000)


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    max_concurrent_bots: int
    created_at: datetime


class UserWithKey(UserPublic):
    api_key: str = Field(description="Shown this once; only its hash is stored.")


class ApiKeyCreated(BaseModel):
    user_id: str
    api_key: str = Field(description="Shown this once; only its hash is stored.")

"""Request and response bodies of the public API (the README's "A walk through the API"; the
OpenAPI page at `/docs` is generated from these)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    field_validator,
    model_validator,
)

BOT_REF = re.compile(r"^(?:[a-z][a-z0-9_]*|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$")
LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$")
MAX_LABELS = 32
MAX_CONFIG_BYTES = 64 * 1024
MAX_CONFIG_DEPTH = 16
MAX_SECRETS = 64
MAX_RESULT_BYTES = 64 * 1024  # runtime/protocol.py says the same to the runtime
MAX_REPORT_BYTES = 16 * 1024
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


RestartTrigger = Literal["crash", "heartbeat_lost", "start_failed"]


class RestartPolicy(Strict):
    max_retries: int = Field(0, ge=0, le=100)
    backoff_s: float = Field(5.0, ge=0, le=86_400)
    on: list[RestartTrigger] | None = Field(
        None,
        max_length=3,
        description="Which failures are retried: `crash` (an active bot failed), "
        "`heartbeat_lost`, `start_failed` (a launch error, a start timeout, an exit before "
        '`started`). Default `["crash", "heartbeat_lost"]`.',
    )

    @field_validator("on")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("each trigger at most once")
        return value


class RestartPublic(BaseModel):
    """A bot's restart policy as stored, `on` spelled out."""

    max_retries: int
    backoff_s: float
    on: list[str]


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
    restart: RestartPolicy | None = Field(
        None, description="Default: the user's default restart policy, else no restarts."
    )
    dedup_key: ShortText | None = None
    state_key: (
        Annotated[
            str,
            StringConstraints(
                min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
            ),
        ]
        | None
    ) = Field(
        None,
        description="A persistent directory (`BOTFLEET_STATE_DIR`) kept across restarts and "
        "relaunches with the same key; one live bot per user and key, else 409 `state_in_use`.",
    )

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
    restart: RestartPublic | None = None
    state_key: str | None = None
    relaunch_of: str | None = Field(None, description="The ended bot this one relaunches.")
    report: dict[str, Any] | None = Field(
        None, description="The bot's latest report (a JSON object it sent with `self.report`)."
    )
    reported_at: datetime | None = None
    created_at: datetime
    started_at: datetime | None
    active_at: datetime | None
    ended_at: datetime | None


Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    """Every list answers a page (`manager/services/keyset.py`): nothing unbounded is built."""

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
    actor: str | None = Field(
        None,
        description="`key:<key id>`, `admin`, `runtime`, `reconciler`, `scheduler` or "
        "`orchestrator`.",
    )
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


class CallbackIn(Strict):
    event: Literal["started", "heartbeat", "leaving", "exited", "report"]
    exit_code: int | None = Field(None, ge=-255, le=255)
    reason: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")] | None = None
    detail: Annotated[str, StringConstraints(max_length=4000)] | None = None
    data: dict[str, Any] | None = Field(
        None, description=f"`report` only: a JSON object of at most {MAX_REPORT_BYTES} bytes."
    )

    @field_validator("data")
    @classmethod
    def _report_size(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            if _json_size(value) > MAX_REPORT_BYTES:
                raise ValueError(f"a report is at most {MAX_REPORT_BYTES} bytes of JSON")
            if _depth(value) > MAX_CONFIG_DEPTH:
                raise ValueError(f"a report is nested at most {MAX_CONFIG_DEPTH} levels")
        return value

    @model_validator(mode="after")
    def _data_for_report(self) -> CallbackIn:
        if (self.event == "report") != (self.data is not None):
            raise ValueError("`data` comes with a `report` event, and only with it")
        return self


class CallbackOut(BaseModel):
    status: str
    changed: bool


class AckIn(Strict):
    ok: bool
    error: Annotated[str, StringConstraints(max_length=4000)] | None = None
    result: Any = Field(
        None,
        description=f"A custom command's JSON answer; larger than {MAX_RESULT_BYTES} bytes "
        "fails the command with `result_too_large`.",
    )


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


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    max_concurrent_bots: int
    created_at: datetime
    disabled_at: datetime | None = None
    default_restart: dict[str, Any] | None = None


class UserWithKey(UserPublic):
    api_key: str = Field(description="Shown this once; only its hash is stored.")


Scope = Literal["bots:read", "bots:write"]


class ApiKeyCreate(Strict):
    name: ShortText | None = None
    scopes: list[Scope] = Field(
        default_factory=lambda: ["bots:read", "bots:write"],
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
        "`key_created`, `key_revoked`."
    )
    target: str = Field(description="`user:<id>` or `key:<id>`.")
    user_id: str | None
    change: dict[str, Any] = Field(description="What changed; `[old, new]` for an update.")


def check_secrets(value: dict[str, str]) -> dict[str, str]:
    """At most MAX_SECRETS names and 64 KiB: the same bound as at POST /bots."""
    if len(value) > MAX_SECRETS:
        raise ValueError(f"at most {MAX_SECRETS} secrets")
    if _json_size(value) > MAX_CONFIG_BYTES:
        raise ValueError(f"secrets are larger than {MAX_CONFIG_BYTES} bytes")
    return value


class SecretsReplace(RootModel[dict[str, str]]):
    """`PUT /bots/{id}/secrets`: the bot's whole new set of secrets, an object of strings."""

    model_config = ConfigDict(strict=True)

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, value: Any) -> Any:
        """`{"secrets": {...}}` (the POST /bots spelling) is accepted too."""
        if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("secrets"), dict):
            return value["secrets"]
        return value

    _bounded = field_validator("root")(check_secrets)

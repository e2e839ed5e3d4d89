"""Bots: what POST /bots takes, what a bot looks like, its history, config and secrets."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    field_validator,
    model_validator,
)

from botfleet.manager.core.statuses import BotStatus
from botfleet.manager.schemas.bounds import (
    ShortText,
    Strict,
    check_config,
    check_secrets,
    in_utc_range,
)
from botfleet.manager.schemas.health_rules import HealthRules
from botfleet.manager.schemas.list_page import Page
from botfleet.manager.schemas.placement import PlacementRequest, Resources
from botfleet.manager.schemas.restart import RestartPolicy, RestartPublic

BOT_REF = re.compile(r"^(?:[a-z][a-z0-9_-]*|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$")
LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$")


def check_label_keys(labels: dict[str, Any]) -> None:
    """A label's key is a short identifier (the value is checked by its type)."""
    for key in labels:
        if not LABEL_KEY.match(key):
            raise ValueError(f"label key {key!r} must match {LABEL_KEY.pattern}")


def check_start_at(value: datetime | None) -> datetime | None:
    """`start_at` names its zone and fits the database's range (POST /bots, PATCH /bots/{id})."""
    if value is not None and value.tzinfo is None:
        raise ValueError("start_at needs a time zone, e.g. 2026-01-01T10:00:00Z")
    if value is not None and not in_utc_range(value):
        raise ValueError("start_at is out of range")
    return value


MAX_LABELS = 32
# A Docker/OCI image reference: [registry[:port]/]path[:tag][@digest], lower-case path.
IMAGE_REF = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$",
    re.ASCII,  # tags are ASCII: `\w` would otherwise take any letter
)


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
    queue: bool | None = Field(
        None,
        description="Over a limit (the user's `max_concurrent_bots`, or a capacity the admin "
        "set), wait `queued` for a slot instead of 429 `concurrency_limit`. Default: the "
        "user's `queue_by_default`.",
    )
    priority: int = Field(
        0, ge=-1000, le=1000, description="In the queue, higher is admitted first; then first come."
    )
    queue_timeout_s: float | None = Field(
        None,
        gt=0,
        le=30 * 86_400,
        description="A queued bot not admitted within this long fails (`queue_timeout`).",
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
    health: HealthRules | None = None  # none: its kind's rules (`[]`: no rules at all)
    resources: Resources | None = Field(
        None,
        description="Its own CPU and memory, over its kind's field by field; each at most the "
        "admin's maximum, else 422 `resources_over_limit`.",
    )
    placement: PlacementRequest | None = Field(
        None,
        description="Where it may run, in place of its kind's (`{}`: anywhere); 422 "
        "`placement_unsupported` where the backend cannot honour it.",
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
        return None if value is None else check_secrets(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels")
        check_label_keys(value)
        return value

    @field_validator("start_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return check_start_at(value)


class BotPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    status: BotStatus
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
    kind_version: int | None = Field(None, description="The version of its kind the bot runs.")
    relaunch_of: str | None = Field(None, description="The ended bot this one relaunches.")
    priority: int = 0
    queue_timeout_s: float | None = None
    queued_at: datetime | None = Field(
        None, description="Since when it waits in the queue (its `start_at`, if later)."
    )
    queue_position: int | None = Field(
        None,
        description="While `queued` and in line: 1 + the queued bots admitted before it that "
        "compete for its slots (the same user's, those with a label of its that has a "
        "capacity, and every bot while a fleet-wide capacity is set).",
    )
    health: list[dict[str, Any]] | None = Field(
        None,
        validation_alias=AliasChoices("health_rules", "health"),
        description="Its health rules: its own, or its kind's when it named none.",
    )
    schedule_id: str | None = Field(None, description="The schedule that started this bot.")
    resources: dict[str, Any] | None = Field(
        None, description="Its own CPU and memory as asked (its kind's fill in the rest)."
    )
    placement: dict[str, Any] | None = Field(
        None, description="Its own placement as asked (none: its kind's, else anywhere)."
    )
    report: dict[str, Any] | None = Field(
        None, description="The bot's latest report (a JSON object it sent with `self.report`)."
    )
    reported_at: datetime | None = None
    last_heartbeat_at: datetime | None = Field(None, description="Its last heartbeat, as stored.")
    created_at: datetime
    started_at: datetime | None
    active_at: datetime | None
    ended_at: datetime | None


BotPage = Page[BotPublic]


class TransitionPublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    from_: BotStatus = Field(alias="from")
    to: BotStatus
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

"""Bulk operations (`POST /bots/actions`, `/operations/...`) and bot edits (`PATCH /bots/{id}`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from botfleet.manager.core.statuses import BotStatus
from botfleet.manager.schemas.bots import check_label_keys, check_start_at
from botfleet.manager.schemas.bounds import ShortText, Strict, check_config
from botfleet.manager.schemas.commands import CommandCreate
from botfleet.manager.schemas.restart import RestartPolicy

BulkAction = Literal["stop", "reconfigure", "command", "relaunch", "delete"]
OperationStatus = Literal["running", "done", "cancelled"]
#: Ids one selector may name; a larger set is better named by its labels.
MAX_SELECTOR_IDS = 1000
#: Label pairs one selector may name (as `GET /bots?label=` takes at most).
MAX_SELECTOR_LABELS = 20

SelectorId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
LabelValue = Annotated[str, StringConstraints(max_length=300)]


class Selector(Strict):
    """Which of the caller's bots: every part given must match (ids AND labels AND status).
    Nothing given at all is refused (422 `empty_selector`): no call acts on a whole fleet by
    accident; `{"status": ["active"]}` says so on purpose."""

    ids: list[SelectorId] | None = Field(
        None,
        max_length=MAX_SELECTOR_IDS,
        description="Bot ids (whole ids). One that is not the caller's bot is a failed result "
        "`bot_not_found`, as `GET /bots/{id}` would answer it.",
    )
    labels: dict[str, LabelValue] | None = Field(
        None, description='Every one of these labels (`{"team": "sales"}`).'
    )
    status: list[Annotated[BotStatus, Field(strict=False)]] | None = Field(
        None, max_length=len(BotStatus), description="Any of these statuses."
    )

    @field_validator("labels")
    @classmethod
    def _few_labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and len(value) > MAX_SELECTOR_LABELS:
            raise ValueError(f"at most {MAX_SELECTOR_LABELS} labels")
        return value

    def is_empty(self) -> bool:
        return not (self.ids or self.labels or self.status)


class BulkActionCreate(Strict):
    """`POST /bots/actions`: one action on every bot a selector matches."""

    action: BulkAction = Field(
        ...,
        description="`stop`, `reconfigure` (merge `config` into each bot's config), `command` "
        "(send `command`), `relaunch` (ended bots), `delete` (ended bots).",
    )
    selector: Selector
    config: dict[str, Any] | None = Field(
        None,
        description="`reconfigure` only: a JSON Merge Patch applied to each bot's latest config, "
        "as `PATCH /bots/{id}/config` does.",
    )
    command: CommandCreate | None = Field(
        None, description="`command` only: `{action, payload}`, as `POST /bots/{id}/commands`."
    )

    @field_validator("config")
    @classmethod
    def _bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_config(value)

    @model_validator(mode="after")
    def _what_the_action_needs(self) -> BulkActionCreate:
        if (self.action == "reconfigure") != (self.config is not None):
            raise ValueError("`config` goes with action `reconfigure`, and only with it")
        if (self.action == "command") != (self.command is not None):
            raise ValueError("`command` goes with action `command`, and only with it")
        return self


class OperationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    action: BulkAction
    status: OperationStatus = Field(
        ..., description="`running` until every selected bot was acted on (`done`), or cancelled."
    )
    total: int = Field(..., description="The bots selected when the operation was created.")
    done: int = Field(..., description="Bots the action succeeded on.")
    failed: int = Field(..., description="Bots it was refused on (see the results).")
    created_at: datetime
    finished_at: datetime | None


class OperationResultPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    bot_id: str
    ok: bool
    error: dict[str, Any] | None = Field(
        None,
        description="`{code, message, status}`: what the single-bot route would have answered "
        "(e.g. 409 `illegal_transition`, 422 `invalid_config`, 404 `bot_not_found`).",
    )
    result: Any = Field(
        None,
        description="stop: `{status}`; reconfigure: `{command_id, config_version}`; command: "
        "`{command_id}`; relaunch: `{bot_id}` (the new bot); delete: null.",
    )


#: The queue's order among one user's bots (`priority`: higher first).
PRIORITY_MIN, PRIORITY_MAX = -1000, 1000


class BotEditBody(Strict):
    """`PATCH /bots/{id}`: a JSON Merge Patch of the fields a bot may change. A field left out
    stays; `null` clears it (`name`, `start_at`, `max_duration_s`; `restart`: no restarts;
    `priority`: 0); `labels` merges key by key, a `null` value removing that label."""

    name: ShortText | None = None
    labels: dict[str, LabelValue | None] | None = None
    start_at: datetime | None = Field(None, strict=False)
    max_duration_s: int | None = Field(None, gt=0, le=30 * 86_400)
    restart: RestartPolicy | None = Field(
        None,
        description="The fields given replace the bot's (`max_retries`, `backoff_s`, `on`), "
        "the others stay; `null`: no restarts.",
    )
    priority: int | None = Field(None, ge=PRIORITY_MIN, le=PRIORITY_MAX)

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, value: dict[str, str | None] | None) -> dict[str, str | None] | None:
        check_label_keys(value or {})
        return value

    @field_validator("start_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return check_start_at(value)


class BotEditPublic(BaseModel):
    """One edit of a bot, as audited: who changed which fields, from what to what."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    bot_id: str
    actor: str | None = Field(None, description="`key:<key id>` or `admin`.")
    changes: dict[str, Any] = Field(..., description='`{"field": {"from": old, "to": new}}`')
    at: datetime

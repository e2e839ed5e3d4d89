"""Schedules: what POST and PATCH /schedules take, what a schedule and its firings look like."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from botfleet.manager.schemas.bots import BotCreate
from botfleet.manager.schemas.bounds import ShortText, Strict

HH_MM = r"^([01]\d|2[0-3]):[0-5]\d$"
CRON_HELP = (
    "5 fields (`minute hour day-of-month month day-of-week`, e.g. `0 9 * * 1-5`), an alias "
    "(`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`), or 6 fields with the seconds "
    "first (`*/30 * * * * *`), at most once every 5 s."
)
MAX_DURATION_S = 30 * 86_400
Overlap = Literal["skip", "allow", "replace"]
MissedPolicy = Literal["skip", "run_once"]
Outcome = Literal["started", "queued", "skipped", "failed", "missed"]


def _no_start_at(template: BotCreate) -> BotCreate:
    if template.start_at is not None:
        raise ValueError("a template has no start_at: the schedule starts its bots at fire times")
    return template


class ScheduleCreate(Strict):
    name: ShortText
    cron: str = Field(min_length=1, max_length=200, description=CRON_HELP)
    timezone: str = Field(
        min_length=1, max_length=64, description="An IANA zone, e.g. `Europe/Berlin` or `UTC`."
    )
    template: BotCreate = Field(
        description="The POST /bots body each firing sends (no `start_at`), checked now against "
        "its kind; its `secrets` are kept sealed and never shown."
    )
    duration_s: int | None = Field(
        None, gt=0, le=MAX_DURATION_S, description="Stop each bot this long after its fire time."
    )
    window_end: str | None = Field(
        None,
        pattern=HH_MM,
        description="Stop each bot at this wall-clock time (`HH:MM`) in the zone: the first one "
        "after its fire time.",
    )
    overlap: Overlap = Field(
        "skip",
        description="The schedule's previous bot still live at a fire time: `skip` (start none, "
        "recorded), `allow` (start another), `replace` (stop it, start the new one).",
    )
    missed: MissedPolicy = Field(
        "skip",
        description="Fire times the manager was not running for: `skip`, or `run_once` (one bot "
        "for all of them, if the latest one's duration or window has not ended).",
    )
    paused: bool = False

    _template = field_validator("template")(_no_start_at)


#: PATCH fields that may be null (null clears them); any other field, if sent, needs a value.
CLEARABLE = frozenset({"duration_s", "window_end"})


class ScheduleUpdate(Strict):
    """Any of the fields of POST /schedules; `paused` pauses and resumes."""

    name: ShortText | None = None
    cron: str | None = Field(None, min_length=1, max_length=200, description=CRON_HELP)
    timezone: str | None = Field(None, min_length=1, max_length=64)
    template: BotCreate | None = Field(
        None, description="Replaces the whole template (its secrets too)."
    )
    duration_s: int | None = Field(None, gt=0, le=MAX_DURATION_S, description="null: none.")
    window_end: str | None = Field(None, pattern=HH_MM, description="null: none.")
    overlap: Overlap | None = None
    missed: MissedPolicy | None = None
    paused: bool | None = Field(
        None, description="true stops firing; false resumes from the next fire time after now."
    )

    @model_validator(mode="before")
    @classmethod
    def _nulls_only_where_they_clear(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key, item in value.items():
                if item is None and key not in CLEARABLE and key in cls.model_fields:
                    raise ValueError(f"{key} cannot be null (only {sorted(CLEARABLE)} can)")
        return value

    @field_validator("template")
    @classmethod
    def _template(cls, value: BotCreate | None) -> BotCreate | None:
        return None if value is None else _no_start_at(value)


class SchedulePublic(BaseModel):
    id: str
    name: str
    cron: str
    timezone: str
    template: dict[str, Any] = Field(description="The POST /bots body, without its secrets.")
    duration_s: int | None
    window_end: str | None
    overlap: Overlap
    missed: MissedPolicy
    paused: bool
    next_fire_at: datetime | None = Field(description="UTC; null while paused.")
    next_fire_local: datetime | None = Field(
        description="The same instant as the zone's wall clock shows it (with its offset)."
    )
    last_fired_at: datetime | None = Field(description="The fire time of the latest firing.")
    last_outcome: Outcome | None = Field(
        description="`started`, `queued` (over the limit, its template asked to queue), "
        "`skipped` (overlap), `failed` (POST /bots refused it: `last_reason` is its code), "
        "`missed` (the manager was not running then)."
    )
    last_bot_id: str | None
    last_reason: str | None = Field(description="Why no bot started, as a stable code.")
    created_at: datetime
    updated_at: datetime


class FiringPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    fired_for: datetime = Field(description="The fire time, as scheduled (UTC).")
    at: datetime = Field(description="When the manager handled it.")
    outcome: Outcome
    bot_id: str | None
    reason: str | None = Field(
        description="Why no bot: `overlap`, `missed`, `window_over`, `user_disabled`, or POST "
        "/bots' error code."
    )
    detail: str
    stop_at: datetime | None = Field(description="When the bot is stopped; null once done.")

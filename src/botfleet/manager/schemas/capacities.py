"""Capacities an admin sets (`/admin/capacities`): how many bots may hold a slot at once,
fleet-wide or among the bots with one label."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, field_validator

from botfleet.manager.schemas.bots import LABEL_KEY
from botfleet.manager.schemas.bounds import Strict

MAX_LABEL_VALUE = 300


class CapacitySet(Strict):
    """`PUT /admin/capacities`: create or change the capacity of a label, or the fleet's."""

    label: str | None = Field(
        None,
        max_length=400,
        description="`key:value`: the bots carrying this label; absent or null: fleet-wide.",
        examples=["team:sales"],
    )
    max_concurrent: int = Field(
        ...,
        ge=0,
        le=1_000_000,
        description="At most this many of those bots hold a slot (every live status but "
        "`queued`); 0 lets none start.",
    )

    @field_validator("label")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        if value is None:
            return None
        key, sep, rest = value.partition(":")
        if not sep or not LABEL_KEY.match(key):
            raise ValueError(
                f"label must look like key:value, the key matching {LABEL_KEY.pattern}"
            )
        if len(rest) > MAX_LABEL_VALUE:
            raise ValueError(f"a label value is at most {MAX_LABEL_VALUE} characters")
        return value

    def label_pair(self) -> tuple[str, str] | None:
        if self.label is None:
            return None
        key, _, value = self.label.partition(":")
        return key, value


class CapacityPublic(BaseModel):
    """A capacity, with what uses it now."""

    id: str
    label: str | None = Field(description="`key:value`; null: the fleet-wide capacity.")
    max_concurrent: int
    in_use: int = Field(description="Bots holding one of its slots now (live, not queued).")
    queued: int = Field(description="Queued bots it concerns (waiting for it or another limit).")
    created_at: datetime
    updated_at: datetime

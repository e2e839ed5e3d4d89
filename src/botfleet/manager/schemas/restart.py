"""A restart policy: asked for at POST /bots or as a user's default, and shown as stored."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from botfleet.manager.schemas.bounds import Strict

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

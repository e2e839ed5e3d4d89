"""What a bot's runtime sends the manager (`/internal/…`): lifecycle events, reports, acks."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, field_validator, model_validator

from botfleet.manager.core.statuses import BotStatus
from botfleet.manager.schemas.bounds import MAX_CONFIG_DEPTH, Strict, json_depth, json_size

MAX_RESULT_BYTES = 64 * 1024  # runtime/protocol.py says the same to the runtime
MAX_REPORT_BYTES = 16 * 1024


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
            if json_size(value) > MAX_REPORT_BYTES:
                raise ValueError(f"a report is at most {MAX_REPORT_BYTES} bytes of JSON")
            if json_depth(value) > MAX_CONFIG_DEPTH:
                raise ValueError(f"a report is nested at most {MAX_CONFIG_DEPTH} levels")
        return value

    @model_validator(mode="after")
    def _data_for_report(self) -> CallbackIn:
        if (self.event == "report") != (self.data is not None):
            raise ValueError("`data` comes with a `report` event, and only with it")
        return self


class CallbackOut(BaseModel):
    status: BotStatus = Field(description="The bot's status after the callback.")
    changed: bool


class AckIn(Strict):
    ok: bool
    error: Annotated[str, StringConstraints(max_length=4000)] | None = None
    result: Any = Field(
        None,
        description=f"A custom command's JSON answer; larger than {MAX_RESULT_BYTES} bytes "
        "fails the command with `result_too_large`.",
    )

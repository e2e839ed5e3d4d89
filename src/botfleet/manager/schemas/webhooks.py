"""Request and response bodies of the webhook API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from botfleet.manager.schemas.bounds import Strict


class WebhookPut(Strict):
    url: str = Field(
        min_length=1, max_length=2000, description="http(s) URL that receives the POSTs."
    )
    enabled: bool = Field(True, description="False keeps the endpoint but sends nothing.")


class WebhookPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    bot_id: str | None = Field(description="The bot of an override; null for the default.")
    url: str
    enabled: bool
    created_at: datetime
    updated_at: datetime
    consecutive_failures: int = Field(
        0, description="Failed attempts in a row (0 after any success)."
    )
    failing_since: datetime | None = Field(
        None, description="When the current run of failures began; null while healthy."
    )
    paused_until: datetime | None = Field(
        None,
        description="The endpoint kept failing: nothing is sent to it until then (its "
        "deliveries wait), then one probe; a success resumes delivery, a failure doubles the "
        "pause. Null once an attempt succeeds (kept, in the past, until the probe answers).",
    )
    secret: str | None = Field(
        None,
        description="The `whsec_…` signing secret (Standard Webhooks); shown only when it is "
        "created or rotated.",
    )


class WebhookSecret(BaseModel):
    secret: str = Field(description="The new `whsec_…` signing secret, shown this once.")


class WebhookAttemptPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    status_code: int | None = Field(description="The receiver's answer; null when none came.")
    error: str | None = Field(description="Why the attempt failed; null when it succeeded.")
    duration_ms: int


class WebhookDeliveryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    endpoint_id: str
    bot_id: str = Field(
        description="The bot the event is about; empty for a test event to the default endpoint."
    )
    event_id: int = Field(
        description="The outbox event id (as in GET /events); 0 for a test event (it has none)."
    )
    webhook_id: str = Field(description="The `webhook-id` header and the envelope's `id`.")
    status: Literal["pending", "delivered", "failed"] = Field(
        description="`pending`, `delivered`, or `failed` (gave up)."
    )
    attempt_count: int
    next_attempt_at: datetime | None
    expires_at: datetime = Field(description="Failed attempts are retried until then.")
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any] = Field(description="The JSON envelope sent.")
    attempts: list[WebhookAttemptPublic] = Field(description="Every attempt, oldest first.")

"""Request and response bodies of the webhook API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from botfleet.manager.schemas.bounds import Strict

Url = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
EndpointName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)
]
EventType = Annotated[str, StringConstraints(min_length=1, max_length=100)]
# Loose bounds here; the exact rules (and their stable codes) are services/webhook_filters.py's.
LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=100)]
LabelValue = Annotated[str, StringConstraints(max_length=300)]
HeaderName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
HeaderValue = Annotated[str, StringConstraints(max_length=4096)]

EVENTS_DESCRIPTION = (
    "The event types sent: `bot.transition` (or `bot.transition.<status>`: only the "
    "transitions into that status), `bot.report`, `command.result`, `bot.queued`, "
    "`schedule.fired`. Omitted or null: every type. An unknown type: 422 `unknown_event_type`."
)
LABELS_DESCRIPTION = "Only the bots whose labels include every pair; omitted or null: every bot."
HEADERS_DESCRIPTION = (
    "Custom headers sent with every request (at most 10; names such as `Content-Type`, "
    "`Host`, `User-Agent`, `webhook-*`, `x-botfleet-*` are ours: 422 `webhook_header_refused`). "
    "Stored sealed; only their names are ever shown."
)


class WebhookPut(Strict):
    url: str = Field(
        min_length=1, max_length=2000, description="http(s) URL that receives the POSTs."
    )
    enabled: bool = Field(True, description="False keeps the endpoint but sends nothing.")


class WebhookCreate(Strict):
    """`POST /webhooks`: one more endpoint of the user, with its own filters."""

    url: Url = Field(description="http(s) URL that receives the POSTs.")
    name: EndpointName | None = None
    events: list[EventType] | None = Field(
        None, min_length=1, max_length=100, description=EVENTS_DESCRIPTION
    )
    labels: dict[LabelKey, LabelValue] | None = Field(
        None, max_length=100, description=LABELS_DESCRIPTION
    )
    headers: dict[HeaderName, HeaderValue] | None = Field(
        None, max_length=100, description=HEADERS_DESCRIPTION
    )
    enabled: bool = Field(True, description="False keeps the endpoint but sends nothing.")


class WebhookPatch(Strict):
    """`PATCH /webhooks/{id}`: the fields given change; `events`, `labels` or `headers` null
    clears that filter (every type, every bot, no custom header)."""

    url: Url | None = None
    name: EndpointName | None = None
    events: list[EventType] | None = Field(
        None, min_length=1, max_length=100, description=EVENTS_DESCRIPTION
    )
    labels: dict[LabelKey, LabelValue] | None = Field(
        None, max_length=100, description=LABELS_DESCRIPTION
    )
    headers: dict[HeaderName, HeaderValue] | None = Field(
        None,
        max_length=100,
        description=HEADERS_DESCRIPTION + " Given, they replace every custom header.",
    )
    enabled: bool | None = None


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
    subscription: bool = Field(
        False,
        description="One of the user's `POST /webhooks` endpoints; false for the `PUT /webhook` "
        "one and bots' own.",
    )
    name: str | None = None
    events: list[str] | None = Field(None, description="The types sent; null: every type.")
    labels: dict[str, str] | None = Field(
        None, description="The labels a bot must all have to be sent; null: every bot."
    )
    header_names: list[str] = Field(
        default_factory=list, description="The custom headers sent (their values are never shown)."
    )
    breaker: Literal["closed", "open", "half_open"] = Field(
        "closed",
        description="The circuit breaker: `open` while paused (until `paused_until`), "
        "`half_open` while its probe is due or under way, `closed` while healthy.",
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

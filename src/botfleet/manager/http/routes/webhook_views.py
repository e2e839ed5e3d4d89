"""What the webhook routes share: the SecretBox, and endpoints and deliveries as the API shows
them (an endpoint's custom headers by name only, never their values)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy.orm import Session

from botfleet.manager.core.models import utcnow
from botfleet.manager.core.sealing import SecretBox
from botfleet.manager.core.webhook_models import WebhookDelivery, WebhookEndpoint
from botfleet.manager.http.deps import AppStateDep
from botfleet.manager.schemas.webhooks import (
    WebhookAttemptPublic,
    WebhookDeliveryPublic,
    WebhookPublic,
)
from botfleet.manager.services import webhook_breaker as breaker
from botfleet.manager.services.webhook_endpoints import attempts_of

CREATED: dict[int | str, dict[str, Any]] = {
    201: {"model": WebhookPublic, "description": "Created, with its signing secret"}
}


def get_box(state: AppStateDep) -> SecretBox:
    """The manager's one SecretBox: webhook signing secrets are sealed like bot secrets."""
    return state.box


BoxDep = Annotated[SecretBox, Depends(get_box)]


def endpoint_public(endpoint: WebhookEndpoint, *, secret: str | None = None) -> WebhookPublic:
    return WebhookPublic(
        id=endpoint.id,
        bot_id=endpoint.bot_id,
        url=endpoint.url,
        enabled=endpoint.enabled,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
        consecutive_failures=endpoint.consecutive_failures or 0,
        failing_since=endpoint.failing_since,
        paused_until=endpoint.paused_until,
        secret=secret,
        subscription=bool(endpoint.subscription),
        name=endpoint.name,
        events=endpoint.events,
        labels=endpoint.label_filter,
        header_names=list(endpoint.header_names or []),
        breaker=breaker.state(endpoint, now=utcnow()),
    )


def deliveries_public(session: Session, rows: list[WebhookDelivery]) -> list[WebhookDeliveryPublic]:
    """Each delivery with its attempts, oldest first."""
    attempts = attempts_of(session, [d.id for d in rows])
    return [
        WebhookDeliveryPublic(
            id=d.id,
            endpoint_id=d.endpoint_id,
            bot_id=d.bot_id,
            event_id=d.event_id,
            webhook_id=str(d.payload.get("id", "")),
            status=d.status,
            attempt_count=d.attempt_count,
            next_attempt_at=d.next_attempt_at,
            expires_at=d.expires_at,
            created_at=d.created_at,
            delivered_at=d.delivered_at,
            payload=d.payload,
            attempts=[WebhookAttemptPublic.model_validate(a) for a in attempts[d.id]],
        )
        for d in rows
    ]

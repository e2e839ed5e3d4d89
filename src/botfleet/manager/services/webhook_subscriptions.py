"""A user's webhook endpoints as `/webhooks` sees them: several per user, each with its event
types, label filter and sealed custom headers (services/webhook_filters.py holds the rules).

Every endpoint of the user is reachable here by its id: the subscriptions `POST /webhooks`
makes, the `PUT /webhook` default and bots' overrides (`GET /webhooks` lists them all). Each
has its own cursor, breaker, pacing and deliveries: the sender treats them alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from botfleet.manager.core.errors import Conflict, ErrorCode, NotFound
from botfleet.manager.core.models import User, utcnow
from botfleet.manager.core.sealing import SecretBox
from botfleet.manager.core.webhook_models import WebhookDelivery, WebhookEndpoint
from botfleet.manager.core.webhook_signing import new_secret
from botfleet.manager.messaging.outbox import latest_event_id
from botfleet.manager.services import webhook_filters as filters
from botfleet.manager.services.keyset import PageRequest, read_page

#: What `PATCH /webhooks/{id}` may change.
EDITABLE = ("url", "name", "events", "labels", "headers", "enabled")


@dataclass(frozen=True)
class Filters:
    """An endpoint's filters as given: checked by `checked`, then stored."""

    events: list[str] | None = None
    labels: dict[str, str] | None = None
    headers: dict[str, str] | None = None

    def checked(self) -> Filters:
        return Filters(
            events=None if self.events is None else filters.check_events(self.events),
            labels=None if not self.labels else filters.check_label_filter(self.labels),
            headers=None if self.headers is None else filters.check_headers(self.headers),
        )


def _apply_headers(
    endpoint: WebhookEndpoint, headers: dict[str, str] | None, box: SecretBox
) -> None:
    """Seal the custom headers (values never stored in clear) and keep their names."""
    if not headers:
        endpoint.headers_sealed, endpoint.header_names = None, None
        return
    endpoint.headers_sealed = box.seal(headers)
    endpoint.header_names = sorted(headers, key=str.lower)


def user_level_count(session: Session, *, user_id: str) -> int:
    """The user's endpoints that count toward the limit: every one that is not a bot's own."""
    query = select(func.count(WebhookEndpoint.id)).where(
        WebhookEndpoint.user_id == user_id, WebhookEndpoint.bot_id.is_(None)
    )
    return int(session.scalar(query) or 0)


def create(
    session: Session,
    *,
    user_id: str,
    url: str,
    name: str | None,
    wanted: Filters,
    enabled: bool,
    box: SecretBox,
    limit: int,
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint with its signing secret (returned in clear this once); 409
    `webhook_limit` once the user has `limit` user-level endpoints. It starts after the newest
    event, like every new endpoint."""
    wanted = wanted.checked()
    # The user's row, locked: two concurrent creations cannot both pass the count.
    session.scalar(select(User.id).where(User.id == user_id).with_for_update())
    if user_level_count(session, user_id=user_id) >= limit:
        raise Conflict(
            ErrorCode.WEBHOOK_LIMIT,
            f"a user may have at most {limit} webhook endpoints "
            "(BOTFLEET_WEBHOOK_MAX_ENDPOINTS); delete one first",
            limit=limit,
        )
    secret, newest = new_secret(), latest_event_id(session)
    endpoint = WebhookEndpoint(
        user_id=user_id,
        bot_id=None,
        subscription=True,
        url=url,
        name=name,
        events=wanted.events,
        label_filter=wanted.labels,
        secret_sealed=box.seal_text(secret),
        enabled=enabled,
        cursor=newest,
        start_event_id=newest,
        updated_at=utcnow(),
    )
    _apply_headers(endpoint, wanted.headers, box)
    session.add(endpoint)
    session.flush()
    return endpoint, secret


def list_page(
    session: Session, *, user_id: str, page: PageRequest = PageRequest()
) -> tuple[list[WebhookEndpoint], str | None]:
    """A page of every endpoint of the user (default, overrides, subscriptions), oldest first."""
    query = select(WebhookEndpoint).where(WebhookEndpoint.user_id == user_id)
    return read_page(session, query, keys=[WebhookEndpoint.id], page=page)


def get_owned(
    session: Session, *, user_id: str, endpoint_id: str, lock: bool = False
) -> WebhookEndpoint:
    """One endpoint of the user; 404 `webhook_not_found` for an unknown or another user's."""
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.user_id == user_id
    )
    endpoint = session.scalar(query.with_for_update() if lock else query)
    if endpoint is None:
        raise NotFound(ErrorCode.WEBHOOK_NOT_FOUND, f"no webhook endpoint {endpoint_id[:64]}")
    return endpoint


def update(
    session: Session,
    *,
    user_id: str,
    endpoint_id: str,
    changes: dict[str, Any],
    box: SecretBox,
) -> WebhookEndpoint:
    """Apply the fields given (`EDITABLE`; `events`, `labels` or `headers` None clears it).
    Filters apply from the next event fanned out; one enabled again starts after the newest."""
    checked = Filters(
        events=changes.get("events"), labels=changes.get("labels"), headers=changes.get("headers")
    ).checked()
    endpoint = get_owned(session, user_id=user_id, endpoint_id=endpoint_id, lock=True)
    if changes.get("url") is not None:
        endpoint.url = changes["url"]
    if "name" in changes:
        endpoint.name = changes["name"]
    if "events" in changes:
        endpoint.events = checked.events
    if "labels" in changes:
        endpoint.label_filter = checked.labels
    if "headers" in changes:
        _apply_headers(endpoint, checked.headers, box)
    enabled = changes.get("enabled")
    if enabled is not None:
        if enabled and not endpoint.enabled:
            endpoint.cursor = max(endpoint.cursor, latest_event_id(session))
        endpoint.enabled = enabled
    endpoint.updated_at = utcnow()
    return endpoint


def delete(session: Session, *, user_id: str, endpoint_id: str) -> None:
    """Remove the endpoint with its deliveries and their attempts."""
    session.delete(get_owned(session, user_id=user_id, endpoint_id=endpoint_id, lock=True))


def rotate_secret(session: Session, *, user_id: str, endpoint_id: str, box: SecretBox) -> str:
    """A new signing secret, stored sealed; returned in clear this once."""
    endpoint = get_owned(session, user_id=user_id, endpoint_id=endpoint_id, lock=True)
    secret = new_secret()
    endpoint.secret_sealed, endpoint.updated_at = box.seal_text(secret), utcnow()
    return secret


def deliveries_page(
    session: Session,
    *,
    user_id: str,
    endpoint_id: str,
    status: str | None = None,
    page: PageRequest = PageRequest(),
) -> tuple[list[WebhookDelivery], str | None]:
    """A page of one endpoint's deliveries, newest event first (test events, numbered 0, last),
    `status` (`pending`, `delivered`, `failed`) only when given."""
    get_owned(session, user_id=user_id, endpoint_id=endpoint_id)
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    keys = [WebhookDelivery.event_id, WebhookDelivery.id]
    return read_page(session, query, keys=keys, page=page, descending=True)

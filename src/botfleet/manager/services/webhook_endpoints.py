"""Endpoints and deliveries as the API sees them: functions of the caller's session with
keyword-only arguments, one job each (the convention of `manager/services/__init__.py`)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from botfleet.manager.core.errors import Conflict, ErrorCode, Invalid, NotFound
from botfleet.manager.core.models import new_id, utcnow
from botfleet.manager.core.sealing import SecretBox
from botfleet.manager.core.webhook_models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from botfleet.manager.core.webhook_signing import new_secret
from botfleet.manager.messaging.outbox import latest_event_id
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services.keyset import PageRequest, read_page
from botfleet.manager.services.webhook_filters import V2_EVENTS
from botfleet.manager.services.webhook_guard import UrlRefused, check_url

#: The `type` of the event `send_test_event` queues.
TEST_EVENT_TYPE = "webhook.test"


def checked_url(url: str, *, allow_private: bool) -> str:
    """The URL, or 422 `webhook_url_refused`. Resolves the host: call it before locking rows."""
    try:
        check_url(url, allow_private=allow_private)
    except UrlRefused as exc:
        raise Invalid(ErrorCode.WEBHOOK_URL_REFUSED, str(exc)) from None
    return url


def _find(
    session: Session, *, user_id: str, bot_id: str | None, lock: bool = False
) -> WebhookEndpoint | None:
    query = select(WebhookEndpoint).where(WebhookEndpoint.user_id == user_id)
    query = query.where(
        WebhookEndpoint.bot_id.is_(None) & WebhookEndpoint.subscription.is_(False)
        if bot_id is None
        else WebhookEndpoint.bot_id == bot_id
    )
    return session.scalar(query.with_for_update() if lock else query)


def list_endpoints(
    session: Session, *, user_id: str, limit: int | None = None
) -> list[WebhookEndpoint]:
    """The user's endpoints: the default one first, then the subscriptions, then the bots'
    own, newest first in each (the dashboard's `limit` newest)."""
    query = select(WebhookEndpoint).where(WebhookEndpoint.user_id == user_id)
    rows = session.scalars(query.order_by(WebhookEndpoint.id.desc()).limit(limit)).all()
    return sorted(rows, key=lambda e: (e.bot_id is not None, e.subscription))


def get_endpoint(session: Session, *, user_id: str, bot_id: str | None) -> WebhookEndpoint:
    if bot_id is not None:
        bot_records.get_bot(session, bot_id, user_id=user_id)  # another user's bot: 404
    endpoint = _find(session, user_id=user_id, bot_id=bot_id)
    if endpoint is None:
        where = f"bot {bot_id}" if bot_id else "this user"
        raise NotFound(ErrorCode.WEBHOOK_NOT_FOUND, f"no webhook is set for {where}")
    return endpoint


def put_endpoint(
    session: Session,
    *,
    user_id: str,
    bot_id: str | None,
    url: str,
    enabled: bool,
    box: SecretBox,
) -> tuple[WebhookEndpoint, str | None]:
    """Create or update the endpoint; with the new signing secret when created (the only time
    it is shown: only its sealed form is stored), None on an update.

    A new endpoint, or one enabled again, starts after the newest event: no history flood.
    """
    if bot_id is not None:
        bot_records.get_bot(session, bot_id, user_id=user_id)  # another user's bot: 404
    endpoint = _find(session, user_id=user_id, bot_id=bot_id, lock=True)
    if endpoint is None:
        secret = new_secret()
        endpoint = _create(
            session,
            user_id=user_id,
            bot_id=bot_id,
            url=url,
            enabled=enabled,
            secret_sealed=box.seal_text(secret),
        )
        if endpoint is not None:
            return endpoint, secret
        # A concurrent request created it a moment ago: update theirs.
        endpoint = _find(session, user_id=user_id, bot_id=bot_id, lock=True)
        if endpoint is None:
            raise AssertionError("the endpoint that won the race is gone")
    if enabled and not endpoint.enabled:
        endpoint.cursor = max(endpoint.cursor, latest_event_id(session))
    endpoint.url, endpoint.enabled, endpoint.updated_at = url, enabled, utcnow()
    return endpoint, None


def _create(
    session: Session,
    *,
    user_id: str,
    bot_id: str | None,
    url: str,
    enabled: bool,
    secret_sealed: str,
) -> WebhookEndpoint | None:
    """Insert a new endpoint in a savepoint; None when a concurrent creation won (the unique
    index refused ours), leaving the transaction usable."""
    newest = latest_event_id(session)
    endpoint = WebhookEndpoint(
        user_id=user_id,
        bot_id=bot_id,
        url=url,
        events=list(V2_EVENTS),  # the types these endpoints always had
        secret_sealed=secret_sealed,
        cursor=newest,
        start_event_id=newest,
        enabled=enabled,
        updated_at=utcnow(),
    )
    try:
        with session.begin_nested():
            session.add(endpoint)
    except IntegrityError:
        return None
    return endpoint


def rotate_secret(session: Session, *, user_id: str, bot_id: str | None, box: SecretBox) -> str:
    """A new signing secret, stored sealed; returned in clear this once."""
    endpoint = get_endpoint(session, user_id=user_id, bot_id=bot_id)
    secret = new_secret()
    endpoint.secret_sealed, endpoint.updated_at = box.seal_text(secret), utcnow()
    return secret


def delete_endpoint(session: Session, *, user_id: str, bot_id: str | None) -> None:
    """Remove the endpoint with its deliveries and their attempts."""
    session.delete(get_endpoint(session, user_id=user_id, bot_id=bot_id))


def _owned_deliveries(user_id: str) -> Select[WebhookDelivery]:
    return (
        select(WebhookDelivery)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookEndpoint.user_id == user_id)
    )


def list_deliveries(
    session: Session, *, user_id: str, bot_id: str | None, page: PageRequest = PageRequest()
) -> tuple[list[WebhookDelivery], str | None]:
    """A page of the user's deliveries (every endpoint of theirs), newest first."""
    query = _owned_deliveries(user_id)
    if bot_id is not None:
        query = query.where(WebhookDelivery.bot_id == bot_id)
    keys = [WebhookDelivery.event_id, WebhookDelivery.id]
    return read_page(session, query, keys=keys, page=page, descending=True)


def latest_deliveries(session: Session, *, user_id: str, limit: int) -> list[WebhookDelivery]:
    """The user's most recently queued deliveries (test events, numbered 0, among them)."""
    query = _owned_deliveries(user_id).order_by(WebhookDelivery.created_at.desc())
    return list(session.scalars(query.limit(limit)))


def get_delivery(session: Session, *, user_id: str, delivery_id: str) -> WebhookDelivery:
    delivery = session.scalar(_owned_deliveries(user_id).where(WebhookDelivery.id == delivery_id))
    if delivery is None:
        raise NotFound(ErrorCode.DELIVERY_NOT_FOUND, f"no webhook delivery {delivery_id}")
    return delivery


def attempts_of(session: Session, delivery_ids: list[str]) -> dict[str, list[WebhookAttempt]]:
    """Each delivery's attempts, oldest first."""
    found: dict[str, list[WebhookAttempt]] = {d: [] for d in delivery_ids}
    if delivery_ids:
        query = select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids))
        for attempt in session.scalars(query.order_by(WebhookAttempt.at, WebhookAttempt.id)):
            found[attempt.delivery_id].append(attempt)
    return found


def redeliver(
    session: Session, *, user_id: str, delivery_id: str, give_up_s: float
) -> WebhookDelivery:
    """Queue the delivery again, due now; it is retried for another `give_up_s` if it fails."""
    delivery = get_delivery(session, user_id=user_id, delivery_id=delivery_id)
    session.refresh(delivery, with_for_update=True)
    now = utcnow()
    delivery.status, delivery.next_attempt_at = "pending", now
    delivery.expires_at = now + timedelta(seconds=give_up_s)
    return delivery


def send_test_event(session: Session, *, user_id: str, endpoint_id: str) -> WebhookDelivery:
    """Queue a `webhook.test` delivery to one of the user's endpoints, due now: the sender
    signs, POSTs and records it like any delivery, on its next tick.

    It is tried once (it expires as it is queued: a failed test is not retried for a day;
    redeliver it or test again). It has no outbox event (`event_id` 0, so it is first in its
    endpoint's queue) and, for the user's default endpoint, no bot (`bot_id` empty). An endpoint
    its breaker paused is probed by the test at once: the user asked, and it is one request.
    """
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.user_id == user_id
    )
    endpoint = session.scalar(query.with_for_update())
    if endpoint is None:
        raise NotFound(ErrorCode.WEBHOOK_NOT_FOUND, f"no webhook endpoint {endpoint_id}")
    if not endpoint.enabled:
        raise Conflict(
            ErrorCode.WEBHOOK_DISABLED,
            "this webhook endpoint is disabled: nothing is sent to it; enable it first",
        )
    now, delivery_id = utcnow(), new_id()
    delivery = WebhookDelivery(
        id=delivery_id,
        endpoint_id=endpoint.id,
        event_id=0,
        bot_id=endpoint.bot_id or "",
        payload={
            "type": TEST_EVENT_TYPE,
            "id": f"test_{delivery_id}",
            "timestamp": now.isoformat(),
            "data": {
                "endpoint_id": endpoint.id,
                "bot_id": endpoint.bot_id,
                "message": "a test event, sent on request",
            },
        },
        status="pending",
        attempt_count=0,
        next_attempt_at=now,
        expires_at=now,
        created_at=now,
    )
    session.add(delivery)
    if endpoint.paused_until is not None and endpoint.paused_until > now:
        endpoint.paused_until = now
    return delivery


def copy_override(session: Session, *, from_bot_id: str, to_bot_id: str, user_id: str) -> None:
    """Give a relaunched bot the webhook override its predecessor had: the same URL, sealed
    signing secret and switch; it starts after the newest event, like any new endpoint."""
    old = _find(session, user_id=user_id, bot_id=from_bot_id)
    if old is None:
        return
    new = _create(
        session,
        user_id=user_id,
        bot_id=to_bot_id,
        url=old.url,
        enabled=old.enabled,
        secret_sealed=old.secret_sealed,
    )
    if new is not None:  # and its filters and headers (PATCH /webhooks/{id})
        new.name, new.events, new.label_filter = old.name, old.events, old.label_filter
        new.headers_sealed, new.header_names = old.headers_sealed, old.header_names

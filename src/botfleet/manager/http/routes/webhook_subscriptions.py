"""`/webhooks`: several endpoints per user, each with its event types, label filter and custom
headers (services/webhook_subscriptions.py). Every endpoint of the user is here by its id, the
`PUT /webhook` one and bots' own included; the test event is `POST /webhooks/{id}/test`
(routes/webhooks.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Response, status

from botfleet.manager.core.errors import error_responses
from botfleet.manager.http.deps import (
    CurrentUser,
    SessionDep,
    SettingsDep,
    authenticate_before_transaction,
)
from botfleet.manager.http.page_params import PageQuery
from botfleet.manager.http.routes.webhook_views import (
    CREATED,
    BoxDep,
    deliveries_public,
    endpoint_public,
)
from botfleet.manager.schemas.api import Page
from botfleet.manager.schemas.webhooks import (
    WebhookCreate,
    WebhookDeliveryPublic,
    WebhookPatch,
    WebhookPublic,
    WebhookSecret,
)
from botfleet.manager.services import webhook_subscriptions as subscriptions
from botfleet.manager.services.webhook_endpoints import checked_url

router = APIRouter(tags=["webhooks"], responses=error_responses(400, 401, 403, 404, 413, 422, 503))
EndpointPath = Annotated[str, Path(max_length=64)]


def checked_new_url(
    body: WebhookCreate,
    settings: SettingsDep,
    _caller: Annotated[str, Depends(authenticate_before_transaction)],
) -> str:
    """The URL, checked (422 `webhook_url_refused`) once the caller is known and before the
    write transaction opens: the DNS lookup is network I/O."""
    return checked_url(body.url, allow_private=settings.webhook_allow_private)


def checked_changed_url(
    body: WebhookPatch,
    settings: SettingsDep,
    _caller: Annotated[str, Depends(authenticate_before_transaction)],
) -> str | None:
    """As `checked_new_url`, for a PATCH that changes the URL (None: it does not)."""
    if body.url is None:
        return None
    return checked_url(body.url, allow_private=settings.webhook_allow_private)


@router.post(
    "/webhooks",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookPublic,
    responses={**CREATED, **error_responses(409)},
)
def create_webhook(
    body: WebhookCreate,
    url: Annotated[str, Depends(checked_new_url)],  # first: before the transaction
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    box: BoxDep,
) -> WebhookPublic:
    """One more endpoint: 201 with its `secret`, shown this once. It is sent the events after
    this one that its filters want. 422 `unknown_event_type`, `webhook_header_refused`,
    `invalid_label_filter` or `webhook_url_refused`; 409 `webhook_limit` past
    BOTFLEET_WEBHOOK_MAX_ENDPOINTS user-level endpoints."""
    endpoint, secret = subscriptions.create(
        session,
        user_id=user.id,
        url=url,
        name=body.name,
        wanted=subscriptions.Filters(events=body.events, labels=body.labels, headers=body.headers),
        enabled=body.enabled,
        box=box,
        limit=settings.webhook_max_endpoints,
    )
    return endpoint_public(endpoint, secret=secret)


@router.get("/webhooks", response_model=Page[WebhookPublic])
def list_webhooks(session: SessionDep, user: CurrentUser, page: PageQuery) -> Page[WebhookPublic]:
    """Every endpoint of yours, oldest first: the `PUT /webhook` one, bots' own
    (`bot_id`), and the subscriptions (`subscription`), each with its breaker."""
    rows, next_cursor = subscriptions.list_page(session, user_id=user.id, page=page)
    return Page(items=[endpoint_public(e) for e in rows], next_cursor=next_cursor)


@router.get("/webhooks/{endpoint_id}", response_model=WebhookPublic)
def get_webhook_endpoint(
    endpoint_id: EndpointPath, session: SessionDep, user: CurrentUser
) -> WebhookPublic:
    endpoint = subscriptions.get_owned(session, user_id=user.id, endpoint_id=endpoint_id)
    return endpoint_public(endpoint)


@router.patch("/webhooks/{endpoint_id}", response_model=WebhookPublic)
def update_webhook(
    endpoint_id: EndpointPath,
    body: WebhookPatch,
    url: Annotated[str | None, Depends(checked_changed_url)],  # first: before the transaction
    user: CurrentUser,
    session: SessionDep,
    box: BoxDep,
) -> WebhookPublic:
    """Change what is given: `url`, `name`, `enabled`, `events`, `labels`, `headers` (the
    whole set; null clears a filter or the headers). It applies from the next event."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    changes["url"] = url
    endpoint = subscriptions.update(
        session, user_id=user.id, endpoint_id=endpoint_id, changes=changes, box=box
    )
    return endpoint_public(endpoint)


@router.delete("/webhooks/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook_endpoint(
    endpoint_id: EndpointPath, user: CurrentUser, session: SessionDep
) -> Response:
    """Remove the endpoint (any of yours: `DELETE /webhook` removes the default the same way)
    with its deliveries."""
    subscriptions.delete(session, user_id=user.id, endpoint_id=endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/webhooks/{endpoint_id}/rotate-secret", response_model=WebhookSecret)
def rotate_webhook_endpoint_secret(
    endpoint_id: EndpointPath, user: CurrentUser, session: SessionDep, box: BoxDep
) -> WebhookSecret:
    """A new signing secret, used from the next attempt on; shown this once."""
    secret = subscriptions.rotate_secret(session, user_id=user.id, endpoint_id=endpoint_id, box=box)
    return WebhookSecret(secret=secret)


@router.get("/webhooks/{endpoint_id}/deliveries", response_model=Page[WebhookDeliveryPublic])
def list_webhook_deliveries(
    endpoint_id: EndpointPath,
    session: SessionDep,
    user: CurrentUser,
    page: PageQuery,
    delivery_status: Annotated[
        Literal["pending", "delivered", "failed"] | None,
        Query(alias="status", description="Only the deliveries in this status."),
    ] = None,
) -> Page[WebhookDeliveryPublic]:
    """The endpoint's deliveries, newest event first, each with its attempts, a page at a
    time; `POST /webhook/deliveries/{id}/redeliver` sends one again."""
    rows, next_cursor = subscriptions.deliveries_page(
        session, user_id=user.id, endpoint_id=endpoint_id, status=delivery_status, page=page
    )
    return Page(items=deliveries_public(session, rows), next_cursor=next_cursor)

"""Outbound webhooks: a user's default endpoint, per-bot overrides, deliveries and attempts
(v1/v2); the v3 endpoints (`/webhooks`, several per user) are webhook_subscriptions.py's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from botfleet.manager.core.errors import error_responses
from botfleet.manager.http.deps import (
    CurrentUser,
    SessionDep,
    SettingsDep,
    authenticate_before_transaction,
)
from botfleet.manager.http.page_params import PageQuery
from botfleet.manager.http.routes import webhook_subscriptions
from botfleet.manager.http.routes.webhook_views import (
    CREATED,
    BoxDep,
    deliveries_public,
    endpoint_public,
)
from botfleet.manager.schemas.api import Page
from botfleet.manager.schemas.webhooks import (
    WebhookDeliveryPublic,
    WebhookPublic,
    WebhookPut,
    WebhookSecret,
)
from botfleet.manager.services import webhook_endpoints as service

router = APIRouter(tags=["webhooks"], responses=error_responses(400, 401, 403, 404, 413, 422, 503))
_public, _deliveries = endpoint_public, deliveries_public


def checked_webhook_url(
    body: WebhookPut,
    settings: SettingsDep,
    _caller: Annotated[str, Depends(authenticate_before_transaction)],
) -> str:
    """The URL, resolved and checked (422 `webhook_url_refused`) after the caller is known and
    before the request's write transaction opens: the DNS lookup is network I/O."""
    return service.checked_url(body.url, allow_private=settings.webhook_allow_private)


class EndpointPut:
    """What PUT of a user's endpoint and of a bot's override share."""

    def __init__(
        self,
        response: Response,
        url: Annotated[str, Depends(checked_webhook_url)],  # first: before the transaction
        user: CurrentUser,
        session: SessionDep,
        box: BoxDep,
    ) -> None:
        self.response, self.url, self.user_id = response, url, user.id
        self.session, self.box = session, box

    def apply(self, body: WebhookPut, *, bot_id: str | None) -> WebhookPublic:
        endpoint, secret = service.put_endpoint(
            self.session,
            user_id=self.user_id,
            bot_id=bot_id,
            url=self.url,
            enabled=body.enabled,
            box=self.box,
        )
        if secret is not None:
            self.response.status_code = status.HTTP_201_CREATED
        return _public(endpoint, secret=secret)


EndpointPutDep = Annotated[EndpointPut, Depends()]


# ---- the user's default endpoint ------------------------------------------------------------


@router.put("/webhook", response_model=WebhookPublic, responses=CREATED)
def put_webhook(body: WebhookPut, put: EndpointPutDep) -> WebhookPublic:
    """Set the URL every transition of the user's bots is POSTed to (201 with the signing
    secret when created; 200 on update, the secret kept). 422 `webhook_url_refused` for a
    non-http(s) URL or one that resolves to a private address."""
    return put.apply(body, bot_id=None)


@router.get("/webhook", response_model=WebhookPublic)
def get_webhook(session: SessionDep, user: CurrentUser) -> WebhookPublic:
    endpoint = service.get_endpoint(session, user_id=user.id, bot_id=None)
    return _public(endpoint)


@router.delete("/webhook", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(user: CurrentUser, session: SessionDep) -> Response:
    service.delete_endpoint(session, user_id=user.id, bot_id=None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/webhook/rotate-secret", response_model=WebhookSecret)
def rotate_webhook_secret(user: CurrentUser, session: SessionDep, box: BoxDep) -> WebhookSecret:
    """A new signing secret, used from the next attempt on; shown this once."""
    secret = service.rotate_secret(session, user_id=user.id, bot_id=None, box=box)
    return WebhookSecret(secret=secret)


# ---- a bot's override -----------------------------------------------------------------------


@router.put("/bots/{bot_id}/webhook", response_model=WebhookPublic, responses=CREATED)
def put_bot_webhook(bot_id: str, body: WebhookPut, put: EndpointPutDep) -> WebhookPublic:
    """This bot's transitions go here instead of the user's default endpoint."""
    return put.apply(body, bot_id=bot_id)


@router.get("/bots/{bot_id}/webhook", response_model=WebhookPublic)
def get_bot_webhook(bot_id: str, session: SessionDep, user: CurrentUser) -> WebhookPublic:
    endpoint = service.get_endpoint(session, user_id=user.id, bot_id=bot_id)
    return _public(endpoint)


@router.delete("/bots/{bot_id}/webhook", status_code=status.HTTP_204_NO_CONTENT)
def delete_bot_webhook(bot_id: str, user: CurrentUser, session: SessionDep) -> Response:
    service.delete_endpoint(session, user_id=user.id, bot_id=bot_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/bots/{bot_id}/webhook/rotate-secret", response_model=WebhookSecret)
def rotate_bot_webhook_secret(
    bot_id: str, user: CurrentUser, session: SessionDep, box: BoxDep
) -> WebhookSecret:
    secret = service.rotate_secret(session, user_id=user.id, bot_id=bot_id, box=box)
    return WebhookSecret(secret=secret)


# ---- deliveries -----------------------------------------------------------------------------


@router.get("/webhook/deliveries", response_model=Page[WebhookDeliveryPublic])
def list_deliveries(
    session: SessionDep,
    user: CurrentUser,
    page: PageQuery,
    bot_id: Annotated[str | None, Query(max_length=64, description="One bot's only.")] = None,
) -> Page[WebhookDeliveryPublic]:
    """The deliveries to all of the user's endpoints, newest first, each with its attempts, a
    page at a time."""
    rows, next_cursor = service.list_deliveries(session, user_id=user.id, bot_id=bot_id, page=page)
    return Page(items=_deliveries(session, rows), next_cursor=next_cursor)


@router.get("/webhook/deliveries/{delivery_id}", response_model=WebhookDeliveryPublic)
def get_delivery(delivery_id: str, session: SessionDep, user: CurrentUser) -> WebhookDeliveryPublic:
    delivery = service.get_delivery(session, user_id=user.id, delivery_id=delivery_id)
    return _deliveries(session, [delivery])[0]


@router.post(
    "/webhook/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=WebhookDeliveryPublic,
)
def redeliver(
    delivery_id: str, session: SessionDep, user: CurrentUser, settings: SettingsDep
) -> WebhookDeliveryPublic:
    """Send the delivery again on the sender's next tick (whatever its status)."""
    delivery = service.redeliver(
        session,
        user_id=user.id,
        delivery_id=delivery_id,
        give_up_s=settings.webhook_give_up_s,
    )
    return _deliveries(session, [delivery])[0]


@router.post(
    "/webhooks/{endpoint_id}/test",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=WebhookDeliveryPublic,
    responses=error_responses(409),
)
def send_test_event(
    endpoint_id: str, session: SessionDep, user: CurrentUser
) -> WebhookDeliveryPublic:
    """Send a `webhook.test` event to one of your endpoints (the `id` that GET /webhook or
    GET /bots/{bot_id}/webhook shows) on the sender's next tick, signed and recorded like every
    delivery: the answer is that delivery; GET /webhook/deliveries/{id} shows its attempt. It
    is tried once; an endpoint its breaker paused is probed by it at once. 409
    `webhook_disabled` for a disabled endpoint."""
    delivery = service.send_test_event(session, user_id=user.id, endpoint_id=endpoint_id)
    return _deliveries(session, [delivery])[0]


router.include_router(webhook_subscriptions.router)

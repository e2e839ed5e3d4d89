"""The dashboard's Webhooks pages: every endpoint of the user (the `PUT /webhook` one, bots' own
and the subscriptions) with its event types, label filter, custom header names and breaker; a
form to add one (its signing secret shown on the answer, once) and a button to delete one; a
"Send test event" button; the latest deliveries, and one endpoint's deliveries a page at a time,
a failed one with a "Redeliver" button.

Every action is the API's service (services/webhook_subscriptions.py, webhook_endpoints.py), in
the request's one transaction; a refusal is shown with the API's message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from botfleet.manager.core.errors import BotfleetError, ErrorCode, Invalid
from botfleet.manager.core.models import utcnow
from botfleet.manager.http.deps import SessionDep, app_state
from botfleet.manager.services import webhook_breaker as breaker
from botfleet.manager.services import webhook_endpoints as endpoints
from botfleet.manager.services import webhook_subscriptions as subscriptions
from botfleet.manager.services.keyset import PageRequest
from botfleet.manager.services.webhook_filters import WEBHOOK_TYPES
from botfleet.manager.ui.session import (
    CsrfCallerDep,
    SignInRequired,
    UiCaller,
    UiCallerDep,
    _open_cookie,
)
from botfleet.manager.ui.start_form import user_only
from botfleet.manager.ui.templating import ActionRefused, render, secure

router = APIRouter()
#: Deliveries shown under the endpoints (the API pages through all of them).
SHOWN_DELIVERIES = 20
SHOWN_ENDPOINTS = 200  # the newest; GET /webhooks pages through them all
DELIVERIES_PAGE = 50
MAX_FIELD = 8000  # characters of one form field
NOTICES = {
    "test-sent": "Test event queued: it is sent within a moment and listed below.",
    "deleted": "Endpoint deleted, with its deliveries.",
    "redelivered": "Delivery queued again: it is sent within a moment.",
}
EndpointPath = Annotated[str, Path(max_length=64)]


@dataclass
class AddForm:
    """The add form as typed (kept to fill the form again after a refusal), and its URL's
    check: the URL, or why it is refused."""

    url: str = ""
    name: str = ""
    events: list[str] = field(default_factory=list)
    labels: str = ""
    headers: str = ""
    refusal: BotfleetError | None = None


async def add_form(request: Request) -> AddForm:
    """The posted add form, every field bounded, with its URL checked.

    This runs before the request's session opens (the route lists it first): the URL's DNS
    lookup is network I/O, and no pooled connection may wait on it. Only a browser holding a
    valid session cookie gets this far; the key behind it and the CSRF token are checked next,
    before anything is written or the refusal is shown."""
    if _open_cookie(request) is None:
        raise SignInRequired
    form = await request.form()
    texts = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    if any(len(v) > MAX_FIELD for v in texts.values()):
        raise Invalid(ErrorCode.INVALID_INPUT, "a form field is too long")
    added = AddForm(
        url=texts.get("url", "").strip(),
        name=texts.get("name", "").strip(),
        events=[v for v in form.getlist("events") if isinstance(v, str)][:50],
        labels=texts.get("labels", ""),
        headers=texts.get("headers", ""),
    )
    allow_private = app_state(request).settings.webhook_allow_private
    try:
        await run_in_threadpool(endpoints.checked_url, added.url, allow_private=allow_private)
    except BotfleetError as exc:
        added.refusal = exc
    return added


def _pairs(text: str, separator: str, what: str) -> dict[str, str]:
    """`key<separator>value` lines (labels also comma-separated) as a dict."""
    found: dict[str, str] = {}
    lines = text.replace(",", "\n") if what == "label" else text
    for line in lines.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(separator)
        if not sep or not key.strip():
            code = ErrorCode.INVALID_LABELS if what == "label" else ErrorCode.INVALID_INPUT
            shown = line.strip()[:60] if what == "label" else key.strip()[:60]
            raise Invalid(code, f"{what} {shown!r} must look like key{separator}value")
        found[key.strip()] = value.strip()
    return found


def _page(
    request: Request,
    session: Session,
    user_id: str | None,
    status_code: int = 200,
    **extra: object,
) -> Response:
    rows = (
        endpoints.list_endpoints(session, user_id=user_id, limit=SHOWN_ENDPOINTS) if user_id else []
    )
    deliveries = (
        endpoints.latest_deliveries(session, user_id=user_id, limit=SHOWN_DELIVERIES)
        if user_id
        else []
    )
    now = utcnow()
    extra.setdefault("form", AddForm())
    return render(
        request,
        "webhooks.html",
        status_code,
        title="Webhooks",
        endpoints=rows,
        breakers={e.id: breaker.state(e, now=now) for e in rows},
        deliveries=deliveries,
        attempts=endpoints.attempts_of(session, [d.id for d in deliveries]),
        event_types=list(WEBHOOK_TYPES.values()),
        now=now,
        **extra,
    )


def _refused(caller: UiCaller, exc: BotfleetError, **extra: object) -> ActionRefused:
    """The page again, with the refusal's message (the action's transaction rolls back)."""
    message, status_code = exc.message, exc.status_code

    def page(request: Request) -> Response:
        with app_state(request).sessions() as fresh:
            return _page(request, fresh, caller.user_id, status_code, error=message, **extra)

    return ActionRefused(page)


def _back(path: str, notice: str) -> Response:
    return secure(RedirectResponse(f"{path}?notice={notice}", status_code=303))


@router.get("/webhooks")
def webhooks_page(request: Request, session: SessionDep, caller: UiCallerDep) -> Response:
    notice = NOTICES.get(request.query_params.get("notice", ""))
    return _page(request, session, caller.user_id, notice=notice)


@router.post("/webhooks")
def add_endpoint(
    request: Request,
    form: Annotated[AddForm, Depends(add_form)],  # first: before the session opens
    caller: CsrfCallerDep,
    session: SessionDep,
) -> Response:
    """Add a subscription; the answer is the page with its signing secret, shown this once."""
    settings = app_state(request).settings
    try:
        user_id = user_only(caller, "adding a webhook endpoint")
        if form.refusal is not None:
            raise form.refusal
        wanted = subscriptions.Filters(
            events=form.events or None,
            labels=_pairs(form.labels, ":", "label") or None,
            headers=_pairs(form.headers, ":", "header") or None,
        )
        endpoint, secret = subscriptions.create(
            session,
            user_id=user_id,
            url=form.url,
            name=form.name[:100] or None,
            wanted=wanted,
            enabled=True,
            box=app_state(request).box,
            limit=settings.webhook_max_endpoints,
        )
    except BotfleetError as exc:
        raise _refused(caller, exc, form=form) from exc
    session.flush()
    return _page(request, session, user_id, created=endpoint, secret=secret)


@router.post("/webhooks/{endpoint_id}/delete")
def delete_endpoint(
    endpoint_id: EndpointPath, caller: CsrfCallerDep, session: SessionDep
) -> Response:
    try:
        user_id = user_only(caller, "deleting a webhook endpoint")
        subscriptions.delete(session, user_id=user_id, endpoint_id=endpoint_id)
    except BotfleetError as exc:
        raise _refused(caller, exc) from exc
    return _back("/ui/webhooks", "deleted")


@router.post("/webhooks/{endpoint_id}/test")
def send_test_event(
    request: Request, endpoint_id: EndpointPath, caller: CsrfCallerDep, session: SessionDep
) -> Response:
    """Queue a `webhook.test` delivery to the endpoint; back to the page, which lists it."""
    try:
        user_id = user_only(caller, "sending a test event")
        endpoints.send_test_event(session, user_id=user_id, endpoint_id=endpoint_id)
    except BotfleetError as exc:
        raise _refused(caller, exc) from exc
    return _back("/ui/webhooks", "test-sent")


@router.post("/webhooks/deliveries/{delivery_id}/redeliver")
def redeliver(
    request: Request, delivery_id: EndpointPath, caller: CsrfCallerDep, session: SessionDep
) -> Response:
    """Send a delivery again (`POST /webhook/deliveries/{id}/redeliver`); back to its endpoint."""
    try:
        user_id = user_only(caller, "redelivering a webhook")
        delivery = endpoints.redeliver(
            session,
            user_id=user_id,
            delivery_id=delivery_id,
            give_up_s=app_state(request).settings.webhook_give_up_s,
        )
    except BotfleetError as exc:
        raise _refused(caller, exc) from exc
    return _back(f"/ui/webhooks/{delivery.endpoint_id}", "redelivered")


@router.get("/webhooks/{endpoint_id}")
def endpoint_page(
    request: Request,
    endpoint_id: EndpointPath,
    session: SessionDep,
    caller: UiCallerDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|failed)$")] = None,
) -> Response:
    """One endpoint and its deliveries, newest event first, a page at a time."""
    try:
        user_id = user_only(caller, "reading a webhook endpoint")
        endpoint = subscriptions.get_owned(session, user_id=user_id, endpoint_id=endpoint_id)
        rows, next_cursor = subscriptions.deliveries_page(
            session,
            user_id=user_id,
            endpoint_id=endpoint_id,
            status=status,
            page=PageRequest(limit=DELIVERIES_PAGE, cursor=cursor),
        )
    except BotfleetError as exc:
        return render(request, "error.html", exc.status_code, title="Refused", message=exc.message)
    return render(
        request,
        "webhook_endpoint.html",
        title="Webhook endpoint",
        endpoint=endpoint,
        breaker_state=breaker.state(endpoint, now=utcnow()),
        deliveries=rows,
        attempts=endpoints.attempts_of(session, [d.id for d in rows]),
        next_cursor=next_cursor,
        status=status,
        notice=NOTICES.get(request.query_params.get("notice", "")),
    )

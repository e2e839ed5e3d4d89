"""The dashboard's Webhooks page: the user's endpoints (the default one and the bots' own), each
with its state and a "Send test event" button, and the latest deliveries with their attempts.

The test event is the API's (`POST /webhooks/{endpoint_id}/test`, services/webhook_endpoints.py):
signed and recorded like every delivery, tried once. Setting an endpoint stays with the API and
the CLI: its signing secret is shown once, which a page reload would lose."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from botfleet.manager.core.errors import BotfleetError
from botfleet.manager.core.models import utcnow
from botfleet.manager.http.deps import SessionDep, app_state
from botfleet.manager.services import webhook_endpoints as endpoints
from botfleet.manager.ui.session import CsrfCallerDep, UiCallerDep
from botfleet.manager.ui.start_form import user_only
from botfleet.manager.ui.templating import ActionRefused, render, secure

router = APIRouter()
#: Deliveries shown under the endpoints (the API pages through all of them).
SHOWN_DELIVERIES = 20


def _page(
    request: Request,
    session: SessionDep,
    user_id: str | None,
    status_code: int = 200,
    **extra: object,
) -> Response:
    rows = endpoints.list_endpoints(session, user_id=user_id) if user_id else []
    deliveries = (
        endpoints.latest_deliveries(session, user_id=user_id, limit=SHOWN_DELIVERIES)
        if user_id
        else []
    )
    attempts = endpoints.attempts_of(session, [d.id for d in deliveries])
    return render(
        request,
        "webhooks.html",
        status_code,
        title="Webhooks",
        endpoints=rows,
        deliveries=deliveries,
        attempts=attempts,
        now=utcnow(),
        **extra,
    )


@router.get("/webhooks")
def webhooks_page(request: Request, session: SessionDep, caller: UiCallerDep) -> Response:
    sent = request.query_params.get("notice") == "test-sent"
    notice = "Test event queued: it is sent within a moment and listed below." if sent else None
    return _page(request, session, caller.user_id, notice=notice)


@router.post("/webhooks/{endpoint_id}/test")
def send_test_event(
    request: Request, endpoint_id: str, caller: CsrfCallerDep, session: SessionDep
) -> Response:
    """Queue a `webhook.test` delivery to the endpoint; back to the page, which lists it."""
    try:
        user_id = user_only(caller, "sending a test event")
        endpoints.send_test_event(session, user_id=user_id, endpoint_id=endpoint_id)
    except BotfleetError as exc:
        message, status_code = exc.message, exc.status_code

        def page(request: Request) -> Response:
            with app_state(request).sessions() as fresh:
                return _page(request, fresh, caller.user_id, status_code, error=message)

        raise ActionRefused(page) from exc
    return secure(RedirectResponse("/ui/webhooks?notice=test-sent", status_code=303))

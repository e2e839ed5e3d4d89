"""The web dashboard at /ui: server-rendered pages (Jinja2, autoescaped) with a little vanilla
JavaScript from our own static files. Pages call the same service functions as the API, so
rules, audit, limits and error messages are the API's.

`install(app)` adds the pages, the static files and the answers for "sign in first" (303) and
"not allowed" (403 page)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from botfleet.manager.ui import (
    admin,
    admin_kinds,
    bot,
    fleet,
    health,
    queue,
    schedules,
    session,
    start_form,
    webhooks,
)
from botfleet.manager.ui.session import SignInRequired, UiForbidden, UiRateLimited, ui_rate_limit
from botfleet.manager.ui.templating import STATIC_DIR, ActionRefused, render, secure

router = APIRouter(prefix="/ui", include_in_schema=False, dependencies=[Depends(ui_rate_limit)])
router.include_router(session.router)
router.add_api_route("", fleet.fleet_page, methods=["GET"])  # /ui itself (no empty sub-path)
router.include_router(fleet.router)
router.include_router(start_form.router)  # /bots/new before /bots/{bot_id}
router.include_router(bot.router)
router.include_router(admin_kinds.router)  # /admin/kinds before any /admin/{...}
router.include_router(admin.router)
router.include_router(health.router)
router.include_router(queue.router)
router.include_router(webhooks.router)
router.include_router(schedules.router)


class SecureStaticFiles(StaticFiles):
    """Static files with the dashboard's security headers (nosniff above all)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        return secure(await super().get_response(path, scope))


async def _sign_in_first(request: Request, exc: Exception) -> Response:
    return secure(RedirectResponse("/ui/sign-in", status_code=303))


async def _forbidden(request: Request, exc: Exception) -> Response:
    message = exc.message if isinstance(exc, UiForbidden) else "not allowed"
    return render(request, "error.html", status_code=403, title="Not allowed", message=message)


async def _rate_limited(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UiRateLimited)
    response = render(
        request, "error.html", status_code=429, title="Too many requests", message=exc.message
    )
    response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ActionRefused)
    return await run_in_threadpool(exc.page, request)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/ui/static", SecureStaticFiles(directory=str(STATIC_DIR)), name="ui-static")
    app.add_exception_handler(SignInRequired, _sign_in_first)
    app.add_exception_handler(UiForbidden, _forbidden)
    app.add_exception_handler(ActionRefused, _refused)
    app.add_exception_handler(UiRateLimited, _rate_limited)

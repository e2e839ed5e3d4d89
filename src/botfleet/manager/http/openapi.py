"""The manager's two OpenAPI documents, one per listener.

`/openapi.json` (the API port; what `/docs` and `/redoc` show) is the users' and the admin's API.
The bots' callbacks (`/internal/…`) are served only on the callback port
(BOTFLEET_CALLBACK_PORT, `manager/http/listeners.py`), so they are left out of it (included
with `include_in_schema=False`) and have their own document there, `/internal/openapi.json`,
under their own security scheme (the bot's token). A route's operation id is its function's
name (`start_bot`, `list_bots`): what generated clients name their methods.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from botfleet.manager.http.listeners import INTERNAL_PREFIX

CALLBACKS_OPENAPI_URL = INTERNAL_PREFIX + "openapi.json"
CALLBACKS_DESCRIPTION = (
    "What a bot's runtime calls on the manager's callback port (BOTFLEET_CALLBACK_PORT), each "
    "call with the bot's own token; the API port answers these paths 404. The protocol in "
    "words: docs/protocol.md."
)


def operation_id(route: APIRoute) -> str:
    """The route function's name, unique in the app (tests/integration/api/test_openapi.py)."""
    return route.name


def install_callbacks_document(app: FastAPI, callbacks: APIRouter) -> None:
    """Serve the callbacks' document on `/internal/openapi.json`, which only the callback port
    reaches. It is built once, at its first request, by an app that holds only `callbacks` and is
    never served itself."""
    built: dict[str, Any] = {}

    async def callbacks_document(request: Request) -> JSONResponse:
        if not built:
            holder = FastAPI(
                title=f"{app.title} bot callbacks",
                version=app.version,
                description=CALLBACKS_DESCRIPTION,
                generate_unique_id_function=operation_id,
                openapi_url=None,
                docs_url=None,
                redoc_url=None,
            )
            holder.include_router(callbacks)
            built.update(holder.openapi())
        return JSONResponse(built)

    app.add_route(CALLBACKS_OPENAPI_URL, callbacks_document, include_in_schema=False)

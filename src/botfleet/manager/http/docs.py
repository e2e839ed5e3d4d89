"""The API's documentation pages (`/docs`, Swagger UI; `/redoc`, ReDoc), served with their
JavaScript and CSS from this server instead of FastAPI's default CDN, so that they work where
the CDN is out of reach (offline, or a network that allows only the manager).

The assets come from the `fastapi-offline` package (Swagger UI 5, which renders the OpenAPI 3.1
that FastAPI emits, and ReDoc 2); create the app with `docs_url=None, redoc_url=None` and call
`install_docs`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/static"
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"
ASSETS = (SWAGGER_JS, SWAGGER_CSS, REDOC_JS, FAVICON)


def assets_dir() -> Path:
    """The folder of the packaged assets; a missing file fails the start, not the page."""
    folder = Path(str(files("fastapi_offline") / "static"))
    missing = [name for name in ASSETS if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(
            f"the API docs' assets {missing} are not in {folder}: reinstall fastapi-offline"
        )
    return folder


def install_docs(app: FastAPI) -> None:
    """Add `/docs`, its OAuth2 redirect page, `/redoc` and the assets they load."""
    openapi_url = app.openapi_url
    if openapi_url is None:
        return
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-static")
    redirect_url = app.swagger_ui_oauth2_redirect_url

    def root(request: Request) -> str:
        """Links start with the root path, as FastAPI's own pages do behind a proxy."""
        return str(request.scope.get("root_path", "")).rstrip("/")

    async def swagger_ui(request: Request) -> HTMLResponse:
        base = root(request)
        return get_swagger_ui_html(
            openapi_url=base + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{base}{ASSETS_URL}/{SWAGGER_JS}",
            swagger_css_url=f"{base}{ASSETS_URL}/{SWAGGER_CSS}",
            swagger_favicon_url=f"{base}{ASSETS_URL}/{FAVICON}",
            oauth2_redirect_url=base + redirect_url if redirect_url else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    async def redoc(request: Request) -> HTMLResponse:
        base = root(request)
        return get_redoc_html(
            openapi_url=base + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{base}{ASSETS_URL}/{REDOC_JS}",
            redoc_favicon_url=f"{base}{ASSETS_URL}/{FAVICON}",
            with_google_fonts=False,
        )

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_route(DOCS_URL, swagger_ui, include_in_schema=False)
    app.add_route(REDOC_URL, redoc, include_in_schema=False)
    if redirect_url:
        app.add_route(redirect_url, oauth2_redirect, include_in_schema=False)

"""One Jinja2 environment for every dashboard page, and the headers every /ui answer carries.

Autoescaping is on for every template: names, labels, details, reports and log lines are
written by bots, so none of them may ever become markup. The Content Security Policy allows
scripts from our own static files only (no inline script, no CDN), which stops an injected
script even if escaping were ever missed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from botfleet.manager.services.bots import short_id

HERE = Path(__file__).parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _age(value: datetime | None, now: datetime | None = None) -> str:
    """`3m 20s` since `value` (the fleet's age column)."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    seconds = max(int(((now or datetime.now(UTC)) - value).total_seconds()), 0)
    return duration(seconds)


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def _when(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _json_text(value: Any) -> str:
    """JSON on one line, as text: autoescaping makes it safe (Jinja's `tojson` would show
    `<` as `\\u003c`, being made for scripts)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True, undefined=jinja2.Undefined
    )
)
templates.env.filters["age"] = _age
templates.env.filters["when"] = _when
templates.env.filters["pretty_json"] = _pretty_json
templates.env.filters["json_text"] = _json_text
templates.env.filters["duration"] = duration
# The short id of a bot or a user: its LAST characters (ids are UUIDv7, their first ones are
# the time they were made: the same for everything made in the same minute). The CLI's rule.
templates.env.filters["short_id"] = short_id


def secure(response: Response) -> Response:
    """Add the dashboard's security headers to any /ui answer."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    """A page: the template with the signed-in caller and its CSRF token in the context."""
    caller = getattr(request.state, "ui_caller", None)
    context.setdefault("caller", caller)
    context.setdefault("csrf_token", caller.csrf_token if caller is not None else "")
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    return secure(response)


class ActionRefused(Exception):
    """A form's action was refused (the API's error): raised out of the route so that its
    unit of work rolls back, then answered by `page(request)`, which renders the form again
    with the message (in a worker thread: it may read the database)."""

    def __init__(self, page: Callable[[Request], Response]) -> None:
        super().__init__("action refused")
        self.page = page

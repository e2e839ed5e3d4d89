"""JSON bodies refused before anything parses them: nested too deep, or not finite.

Python's json module reads nested arrays and objects by recursion: a body nested 500 deep
ended in a RecursionError inside the framework (a 500 and 116 KB of traceback in the log per
1 KB request). So every body a route would read as JSON is scanned first, without recursion
and in passes that run at C speed over the raw bytes:

1. strings are cut out (one regular expression that honours escapes and cannot backtrack);
2. what remains is reduced to its brackets (`{` and `[` count alike), and the innermost pairs
   are removed, one level per pass: a pair still left after `BOTFLEET_MAX_JSON_DEPTH` passes,
   or more unclosed openings than the limit allows, is too deep (422 `json_too_deep`);
3. outside strings, `NaN`, `Infinity` and numbers too large for a float (`1e999`) are refused
   (422 `non_finite_number`): Python's json accepts them, no other JSON reader does, and the
   database would store what no client can read back;
4. inside strings, the escapes `\u0000` and an unpaired surrogate (`\ud800` alone) are refused
   (422 `unstorable_text`): PostgreSQL stores neither in text or jsonb, and the same body must
   get the same answer on SQLite.

Only what FastAPI would parse as JSON is scanned so (`application/json`, `application/*+json`,
or no Content-Type). A NUL in a URL (`%00` in its path or query) or in a dashboard form's field
gets the same 422 `unstorable_text`. Installed inside `BodySizeLimit`, so a scanned body is never
larger than BOTFLEET_MAX_BODY_BYTES.
"""

from __future__ import annotations

import json
import math
import re

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from botfleet.manager.core.errors import ErrorCode, error_body, is_json_media_type

#: A JSON string, escapes included; an unterminated one runs to the end. Possessive: linear.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
#: Every byte but the brackets goes; `{` and `}` become `[` and `]` (depth is depth).
_BRACKETS_ONLY = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
#: Outside strings, a float below 1e200 can be told from its shape: an exponent under 100 and
#: fewer than 100 digits. Only a body with another shape has its floats converted (`not_finite`).
_LONG_EXPONENT = re.compile(rb"[eE]\+?0*[1-9][0-9]{2}")
_DIGITS_TO_NUL = bytes.maketrans(b"0123456789", b"\0" * 10)
_RISKY_FLOAT = re.compile(
    rb"[0-9]+(?:\.[0-9]*)?[eE]\+?0*[1-9][0-9]{2,}"
    rb"|[0-9]{100,}(?:\.[0-9]*(?:[eE][+-]?[0-9]+)?|[eE][+-]?[0-9]+)"
)


FORM = "application/x-www-form-urlencoded"
_UNSTORABLE = (
    ErrorCode.UNSTORABLE_TEXT,
    "text may not hold \\u0000 (%00) or an unpaired surrogate: no database stores them",
)


#: An escape that may make a string unstorable: NUL or half of a surrogate pair. Checked only in
#: the (rare) strings that hold one, by decoding them.
_RISKY_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


def unstorable(body: bytes) -> bool:
    """Whether a string of the body decodes to U+0000 or an unpaired surrogate."""
    if _RISKY_ESCAPE.search(body) is None:
        return False
    for match in _STRING.finditer(body):
        token = match[0]
        if _RISKY_ESCAPE.search(token) is None:
            continue
        try:
            text = json.loads(token)
        except ValueError:  # unterminated or malformed: the parser will say so
            continue
        if "\0" in text:
            return True
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return True
    return False


def too_deep(outside_strings: bytes, limit: int) -> bool:
    """Whether arrays and objects nest deeper than `limit` (the body with its strings cut
    out). No recursion and at most `limit` passes, each one `bytes.replace`."""
    brackets = outside_strings.translate(_BRACKETS_ONLY, _NOT_BRACKETS)
    removed = 0
    while brackets and removed < limit:
        inner = brackets.replace(b"[]", b"")
        if len(inner) == len(brackets):
            break
        brackets, removed = inner, removed + 1
    if b"[]" in brackets:  # a level below the `limit` removed: deeper than the limit
        return True
    # What is left has the form "]]][[[": closings with no opening (the parser stops there),
    # then openings never closed, around what the passes removed.
    return brackets.count(b"[") + removed > limit


def not_finite(outside_strings: bytes) -> bool:
    """Whether the body holds NaN, Infinity or a number a float cannot hold."""
    if b"NaN" in outside_strings or b"Infinity" in outside_strings:
        return True
    if _LONG_EXPONENT.search(
        outside_strings
    ) is None and b"\0" * 100 not in outside_strings.translate(_DIGITS_TO_NUL):
        return False
    # Integers stay integers (json makes them int, never inf): only floats can overflow.
    return any(math.isinf(float(m[0])) for m in _RISKY_FLOAT.finditer(outside_strings))


def refusal(body: bytes, *, max_depth: int) -> tuple[ErrorCode, str] | None:
    """Why this JSON body is refused, or None."""
    outside_strings = _STRING.sub(b'""', body)
    if too_deep(outside_strings, max_depth):
        return ErrorCode.JSON_TOO_DEEP, f"JSON is nested deeper than {max_depth} levels"
    if not_finite(outside_strings):
        return (
            ErrorCode.NON_FINITE_NUMBER,
            "NaN, Infinity and numbers too large for a float are not JSON",
        )
    if unstorable(body):
        return _UNSTORABLE
    return None


def read_as_json(content_type: str | None) -> bool:
    """Whether FastAPI would parse this body as JSON: no Content-Type, `application/json` or
    `application/*+json`."""
    return not content_type or is_json_media_type(content_type)


def nul_in_url(scope: Scope) -> bool:
    """Whether the path or the query string decodes to a NUL."""
    return "\0" in scope["path"] or b"%00" in scope.get("query_string", b"")


class JsonBodyGuard:
    """ASGI middleware: buffers a JSON body (or a form), refuses it (422) when `refusal` says
    so, else hands the same bytes on to the app."""

    def __init__(self, app: ASGIApp, max_depth: int) -> None:
        self.app, self.max_depth = app, max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if nul_in_url(scope):
            await JSONResponse(error_body(*_UNSTORABLE), 422)(scope, receive, send)
            return
        content_type = Headers(scope=scope).get("content-type")
        form = (content_type or "").split(";")[0].strip().lower() == FORM
        if not form and not read_as_json(content_type):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # a disconnect: the app will see it
                await self.app(scope, _replay(message, receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if form:
            refused = _UNSTORABLE if b"%00" in body else None
        else:
            refused = refusal(body, max_depth=self.max_depth) if body else None
        if refused is not None:
            response = JSONResponse(error_body(*refused), 422)
            await response(scope, receive, send)
            return
        whole: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay(whole, receive), send)


def _replay(first: Message, receive: Receive) -> Receive:
    """`first`, then whatever the client sends next (a disconnect, for a stream)."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if not given:
            given = True
            return first
        return await receive()

    return replayed

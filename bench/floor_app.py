"""The HTTP floor of figure 4: a bare ASGI app on the manager's own server (uvicorn, same
settings) answering every request with a fixed small JSON body, without any work behind it.

    python -m uvicorn bench.floor_app:app --port 8099 --no-access-log
"""

from __future__ import annotations

from typing import Any

BODY = b'{"status":"active","changed":false}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})

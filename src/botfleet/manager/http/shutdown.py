"""Long streams end when the server begins to stop.

uvicorn's graceful stop waits for every open response to finish. The event stream, a followed
log and the dashboard's live views never finish on their own, so each open tab held `make run`'s
Ctrl-C (or a replica's SIGTERM) for the stream's whole keep-alive. `StoppingServer` tells the
app when a stop begins, and `client_gone(request)`, which the streams poll between writes, then
answers True: each stream ends within its poll interval and the stop completes.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from types import FrameType

import uvicorn
from fastapi import FastAPI, Request


def stopping_flag(app: FastAPI) -> threading.Event:
    """The app's "a stop has begun" flag (created on first use)."""
    flag = getattr(app.state, "stopping", None)
    if flag is None:
        flag = app.state.stopping = threading.Event()
    return flag


class StoppingServer(uvicorn.Server):
    """uvicorn, raising the app's stopping flag as soon as a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._stopping = stopping_flag(app)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._stopping.set()
        super().handle_exit(sig, frame)


def client_gone(request: Request) -> Callable[[], Awaitable[bool]]:
    """For a long response: True once its client left or the server is stopping."""
    stopping = stopping_flag(request.app)

    async def gone() -> bool:
        return stopping.is_set() or await request.is_disconnected()

    return gone

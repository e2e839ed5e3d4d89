"""Long streams end when the server begins to stop.

uvicorn's graceful stop waits for every open response to finish. The event stream, a followed
log and the dashboard's live views never finish on their own, so each open tab held `make run`'s
Ctrl-C (or a replica's SIGTERM) for the stream's whole keep-alive. `StoppingServer` tells the
app when a stop begins, and `client_gone(request)`, which the streams poll between writes, then
answers True: each stream ends within its poll interval and the stop completes.

The flag is set from a signal handler, so it takes no lock: a `threading.Event` did, and a second
signal arriving while the first handler was inside `Event.set` (`make` and its manager both
signalled, Ctrl-C twice) re-entered it and deadlocked the main thread: the manager never exited.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import FrameType

import uvicorn
from fastapi import FastAPI, Request


class StopFlag:
    """Set once, read anywhere; safe to set from a signal handler (a plain attribute, no lock)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


def stopping_flag(app: FastAPI) -> StopFlag:
    """The app's "a stop has begun" flag (created on first use)."""
    flag = getattr(app.state, "stopping", None)
    if flag is None:
        flag = app.state.stopping = StopFlag()
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

"""Exponential backoff with jitter, shared by the HTTP client and the Redis listener.

Written here rather than imported so the runtime needs only the standard library. Jitter keeps
a fleet of bots that lost the manager at the same moment from retrying in lockstep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from botfleet.runtime.protocol import describe_error

T = TypeVar("T")
log = logging.getLogger("botfleet.runtime.retry")


@dataclass
class Backoff:
    """Delays base, 2·base, 4·base … capped at `cap_s`, each drawn in [d/2, d] ("equal jitter")."""

    base_s: float = 0.5
    cap_s: float = 10.0
    attempt: int = 0

    def next_delay(self) -> float:
        import random  # here, not at the top: a bot that never retries never loads it

        delay = min(self.cap_s, self.base_s * 2**self.attempt)
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


async def retry(
    op: Callable[[], Awaitable[T]],
    *,
    retry_on: tuple[type[BaseException], ...],
    budget_s: float,
    what: str,
    backoff: Backoff | None = None,
) -> T:
    """Call `op` until it succeeds, retrying `retry_on` errors while `budget_s` lasts.

    The last error is re-raised once the next wait would overrun the budget, so callers decide
    what giving up means.
    """
    backoff = backoff or Backoff()
    deadline = time.monotonic() + budget_s
    while True:
        try:
            return await op()
        except retry_on as exc:
            delay = backoff.next_delay()
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s failed (%s); retrying in %.1fs", what, describe_error(exc), delay)
            await asyncio.sleep(delay)

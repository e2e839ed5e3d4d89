"""The circuit breaker of one webhook endpoint: pure rules over the endpoint's row.

An endpoint that keeps failing (`webhook_breaker_failures` attempts in a row, or no success for
`webhook_breaker_failing_s`) is paused: its deliveries wait, none is dropped for it. When the
pause ends one probe attempt is sent; its success closes the breaker, its failure pauses the
endpoint again for twice as long (up to `webhook_breaker_pause_max_s`). The sender applies these
rules in the transaction that records each attempt, with the endpoint's row locked.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from botfleet.manager.core.settings import Settings
from botfleet.manager.core.webhook_models import WebhookEndpoint

BreakerState = Literal["closed", "open", "half_open"]


def is_probing(endpoint: WebhookEndpoint) -> bool:
    """Tripped in this failure streak: after its pause only one attempt at a time (a probe)."""
    return endpoint.pause_s > 0


def record_success(endpoint: WebhookEndpoint) -> None:
    endpoint.consecutive_failures = 0
    endpoint.failing_since = endpoint.paused_until = None
    endpoint.pause_s = 0.0


def record_failure(endpoint: WebhookEndpoint, settings: Settings, *, now: datetime) -> bool:
    """Count one failed attempt; True when it (re)opens the breaker (the endpoint is paused)."""
    endpoint.consecutive_failures += 1
    if endpoint.failing_since is None:
        endpoint.failing_since = now
    if endpoint.paused_until is not None and now < endpoint.paused_until:
        return False  # an attempt started before the pause: paused already, not once more
    failing_s = (now - endpoint.failing_since).total_seconds()
    too_long = 0 < settings.webhook_breaker_failing_s <= failing_s
    if not (
        is_probing(endpoint)  # the probe failed
        or endpoint.consecutive_failures >= settings.webhook_breaker_failures
        or too_long
    ):
        return False
    pause = endpoint.pause_s * 2 if is_probing(endpoint) else settings.webhook_breaker_pause_s
    endpoint.pause_s = min(pause, settings.webhook_breaker_pause_max_s)
    endpoint.paused_until = now + timedelta(seconds=endpoint.pause_s)
    return True


def state(endpoint: WebhookEndpoint, *, now: datetime) -> BreakerState:
    """`open` while paused (its deliveries wait), `half_open` once the pause ran out and the
    probe has not answered yet, else `closed`."""
    if endpoint.paused_until is not None and endpoint.paused_until > now:
        return "open"
    return "half_open" if is_probing(endpoint) else "closed"

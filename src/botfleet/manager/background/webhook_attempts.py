"""One attempt at one webhook delivery: claim it, sign and POST it, record the outcome.

A delivery is claimed (its next attempt pushed past the request timeout, so a crash retries
it), POSTed to the very address checked against SSRF, and its attempt recorded: 2xx
delivered; otherwise retried with exponential backoff until it expires (`failed`). Every
failure the endpoint is to blame for counts in its circuit breaker
(`manager/services/webhook_breaker.py`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core import metrics
from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import utcnow
from botfleet.manager.core.sealing import SecretBox, SecretsUnreadable
from botfleet.manager.core.settings import Settings
from botfleet.manager.core.webhook_models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from botfleet.manager.core.webhook_signing import sign
from botfleet.manager.services import webhook_breaker as breaker
from botfleet.manager.services.webhook_filters import sendable
from botfleet.manager.services.webhook_guard import UrlRefused, pin

log = logging.getLogger(__name__)

CLAIM_MARGIN_S = 30  # a claimed delivery is due again after the timeout plus this (a crash)
USER_AGENT = "botfleet-webhooks/1"


def body_bytes(payload: dict[str, Any]) -> bytes:
    """Compact JSON: these exact bytes are signed and sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def retry_delay_s(settings: Settings, attempt_count: int) -> float:
    """After the n-th failed attempt: retry_s * 2^(n-1), capped."""
    exponent = min(max(attempt_count - 1, 0), 30)
    return float(min(settings.webhook_retry_s * 2**exponent, settings.webhook_retry_max_s))


@dataclass(frozen=True)
class Claimed:
    """A delivery about to be attempted, with its endpoint's signing secret and custom headers
    opened (never logged: a header is often the receiver's credential)."""

    delivery_id: str
    url: str
    secret: str
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict, repr=False)


class WebhookAttempts:
    """Makes attempts; holds the HTTP client (thread-safe, shared by every lane)."""

    def __init__(
        self, sessions: sessionmaker[Session], settings: Settings, *, box: SecretBox
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.box = box  # opens the endpoints' sealed signing secrets
        self.client = httpx.Client(
            timeout=settings.webhook_timeout_s,
            follow_redirects=False,  # a redirect is a failure (the spec): update the URL instead
            headers={"User-Agent": USER_AGENT},
            # Each attempt connects to the address it checked: no connection kept for the next
            # (its TLS session was verified for one name; another may pin the same address),
            # and no proxy from the environment (a proxy would resolve the name again).
            limits=httpx.Limits(max_keepalive_connections=0),
            trust_env=False,
        )

    def close(self) -> None:
        self.client.close()

    def deliver(self, delivery_id: str, *, on_pause: Callable[[str], None]) -> bool:
        """One attempt at one delivery; True unless the attempt failed. `on_pause` hears of
        an endpoint whose breaker this attempt opened, before its transaction commits."""
        try:
            claimed = self.claim(delivery_id)
        except SecretsUnreadable as exc:  # a sealing key dropped too early: retried with backoff
            log.error("webhook delivery %s cannot be signed: %s", delivery_id, exc)
            error = f"cannot sign: {exc}"
            self.record(delivery_id, status_code=None, error=error, duration_ms=0, blame=False)
            return False
        if claimed is None:
            return True  # delivered, deleted or rescheduled meanwhile
        status_code, failure, duration_ms = self.post(claimed)
        self.record(
            delivery_id,
            status_code=status_code,
            error=failure,
            duration_ms=duration_ms,
            on_pause=on_pause,
        )
        return failure is None

    def claim(self, delivery_id: str) -> Claimed | None:
        with transaction(self.sessions) as session:
            delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
            now = utcnow()
            if (
                delivery is None
                or delivery.status != "pending"
                or delivery.next_attempt_at is None
                or delivery.next_attempt_at > now
            ):
                return None
            endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
            if endpoint is None or not endpoint.enabled:
                return None
            if endpoint.paused_until is not None and endpoint.paused_until > now:
                return None  # its breaker opened meanwhile: the delivery waits
            delivery.next_attempt_at = now + timedelta(
                seconds=self.settings.webhook_timeout_s + CLAIM_MARGIN_S
            )
            secret = self.box.open_text(endpoint.secret_sealed)
            headers = self.box.open(endpoint.headers_sealed) if endpoint.headers_sealed else {}
            return Claimed(delivery.id, endpoint.url, secret, dict(delivery.payload), headers)

    def post(self, claimed: Claimed) -> tuple[int | None, str | None, int]:
        """POST the signed envelope; (status code, error or None, duration in ms)."""
        body = body_bytes(claimed.payload)
        headers = {  # the endpoint's own first: ours (checked as reserved anyway) win
            **sendable(claimed.headers),
            **sign(claimed.secret, str(claimed.payload["id"]), body),
            "Content-Type": "application/json",
        }
        started = time.monotonic()
        status_code: int | None = None
        error: str | None
        try:
            # Checked again for this attempt (the DNS answer may have changed since the URL was
            # saved), and the request goes to the very address checked: no second resolution.
            target = pin(claimed.url, allow_private=self.settings.webhook_allow_private)
            with self.client.stream(
                "POST",
                target.url,
                content=body,
                headers={**headers, **target.headers},
                extensions=target.extensions,
            ) as answer:
                status_code = answer.status_code  # the body is not read: only the status counts
            error = None if 200 <= status_code < 300 else f"HTTP {status_code}"
        except UrlRefused as exc:
            error = f"refused: {exc}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:2000]
        return status_code, error, int((time.monotonic() - started) * 1000)

    def record(
        self,
        delivery_id: str,
        *,
        status_code: int | None,
        error: str | None,
        duration_ms: int,
        blame: bool = True,
        on_pause: Callable[[str], None] | None = None,
    ) -> None:
        """Keep the attempt and its outcome; `blame` False when the failure was ours (a secret
        that cannot be opened), which the endpoint's breaker does not count."""
        with transaction(self.sessions) as session:
            endpoint_id = session.scalar(
                select(WebhookDelivery.endpoint_id).where(WebhookDelivery.id == delivery_id)
            )
            if endpoint_id is None:
                return  # its endpoint was deleted meanwhile
            # The endpoint before the delivery: the order deleting an endpoint locks them in.
            endpoint = session.get(WebhookEndpoint, endpoint_id, with_for_update=True)
            delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
            if endpoint is None or delivery is None:
                return
            now = utcnow()
            session.add(
                WebhookAttempt(
                    delivery_id=delivery_id,
                    at=now,
                    status_code=status_code,
                    error=error,
                    duration_ms=duration_ms,
                )
            )
            delivery.attempt_count += 1
            metrics.WEBHOOK_ATTEMPTS.labels("ok" if error is None else "error").inc()
            if error is None:
                delivery.status, delivery.delivered_at, delivery.next_attempt_at = (
                    "delivered",
                    now,
                    None,
                )
                breaker.record_success(endpoint)
                return
            if blame and breaker.record_failure(endpoint, self.settings, now=now):
                if on_pause is not None:
                    on_pause(endpoint_id)
                log.warning(
                    "webhook endpoint %s paused for %.0f s after %d failed attempts",
                    endpoint_id,
                    endpoint.pause_s,
                    endpoint.consecutive_failures,
                )
            if now >= delivery.expires_at:
                delivery.status, delivery.next_attempt_at = "failed", None
                metrics.WEBHOOK_GAVE_UP.inc()
                log.warning("webhook delivery %s gave up: %s", delivery_id, error)
            else:
                delay = retry_delay_s(self.settings, delivery.attempt_count)
                # The last try is at the deadline; failing it gives up.
                retry_at = now + timedelta(seconds=delay)
                delivery.next_attempt_at = min(retry_at, delivery.expires_at)

"""The webhook sender: the leader's tick, in two steps, each isolated from the other's failures.

1. Fan-out: for each enabled endpoint, the outbox `transition` events after its cursor (its
   user's, or its bot's for an override; a bot with an override is left out of the default)
   become one delivery each, and the cursor advances, in one transaction with the endpoint row
   locked. Events are read only up to a *horizon*: PostgreSQL hands out ids before commit, so a
   lower id may still be committing when a higher one is visible; a gap is waited for up to
   `webhook_settle_s` (a rolled-back transaction leaves one for good).
2. Sending: due deliveries (a bounded batch), one endpoint's in event order, endpoints in
   parallel. Each is claimed (its next attempt pushed past the request timeout), POSTed,
   and its attempt recorded: 2xx delivered; otherwise retried with exponential backoff until it
   expires (`failed`). One endpoint's failure never stops the tick.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import exists, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from manager import metrics
from manager.config import Settings
from manager.db import transaction
from manager.loops import run_steps
from manager.models import Event, utcnow
from manager.sealing import SecretBox, SecretsUnreadable
from manager.webhooks.guard import UrlRefused, pin
from manager.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from manager.webhooks.signing import sign

log = logging.getLogger(__name__)

EVENT_TYPE = "bot.transition"
FAN_OUT_BATCH = 500  # events per endpoint per tick
HORIZON_SCAN = 5000  # outbox ids examined per tick for gaps
SEND_WORKERS = 8  # endpoints sent to in parallel
CLAIM_MARGIN_S = 30  # a claimed delivery is due again after the timeout plus this (a crash)
USER_AGENT = "botfleet-webhooks/1"


def envelope(event: Event) -> dict[str, Any]:
    """The JSON body of one webhook: the outbox event's data, with its id and time."""
    return {
        "type": EVENT_TYPE,
        "id": f"evt_{event.id}",
        "timestamp": event.at.isoformat(),
        "data": event.data,
    }


def body_bytes(payload: dict[str, Any]) -> bytes:
    """Compact JSON: these exact bytes are signed and sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def retry_delay_s(settings: Settings, attempt_count: int) -> float:
    """After the n-th failed attempt: retry_s * 2^(n-1), capped."""
    exponent = min(max(attempt_count - 1, 0), 30)
    return float(min(settings.webhook_retry_s * 2**exponent, settings.webhook_retry_max_s))


@dataclass(frozen=True)
class Claimed:
    """A delivery about to be attempted, with its endpoint's signing secret opened."""

    delivery_id: str
    url: str
    secret: str
    payload: dict[str, Any]


class WebhookSender:
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
        self.pool = ThreadPoolExecutor(SEND_WORKERS, thread_name_prefix="webhook")
        self.last_errors: list[str] = []

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()

    # ---- driving ---------------------------------------------------------------------------

    def run_once(self) -> None:
        """One tick (its loop is `manager/loops.py`'s `IntervalLoop`). A step that fails as a
        whole raises `StepsFailed` once both have run, so the loop counts it; one endpoint's
        failure is tolerated and only kept in `last_errors` (this tick's)."""
        self.last_errors = []
        run_steps((self.fan_out, self.send_due), what="webhook")

    # ---- 1. fan-out ------------------------------------------------------------------------

    def fan_out(self) -> None:
        with self.sessions() as session:
            cursors = dict(
                session.execute(
                    select(WebhookEndpoint.id, WebhookEndpoint.cursor).where(
                        WebhookEndpoint.enabled.is_(True)
                    )
                ).all()
            )
            if not cursors:
                return
            horizon = self.horizon(session, floor=min(cursors.values()))
        for endpoint_id, cursor in cursors.items():
            if cursor >= horizon:
                continue
            try:
                self.fan_out_endpoint(endpoint_id, horizon)
            except Exception as exc:
                self.last_errors.append(f"fan-out {endpoint_id}: {exc}")
                log.exception("webhook fan-out for endpoint %s failed", endpoint_id)

    def horizon(self, session: Session, *, floor: int) -> int:
        """The highest event id up to which every id is committed, or given up as rolled back."""
        settled = utcnow() - timedelta(seconds=self.settings.webhook_settle_s)
        rows = session.execute(
            select(Event.id, Event.at)
            .where(Event.id > floor)
            .order_by(Event.id)
            .limit(HORIZON_SCAN)
        ).all()
        horizon = floor
        for event_id, at in rows:
            if event_id != horizon + 1 and at > settled:
                break  # a lower id may still be committing
            horizon = event_id
        return horizon

    def fan_out_endpoint(self, endpoint_id: str, horizon: int) -> int:
        """Queue the endpoint's new events up to `horizon`; the number queued."""
        with transaction(self.sessions) as session:
            endpoint = session.get(WebhookEndpoint, endpoint_id, with_for_update=True)
            if endpoint is None or not endpoint.enabled or endpoint.cursor >= horizon:
                return 0
            query = select(Event).where(
                Event.id > endpoint.cursor,
                Event.id <= horizon,
                Event.user_id == endpoint.user_id,
                Event.kind == "transition",
            )
            if endpoint.bot_id is not None:
                query = query.where(Event.bot_id == endpoint.bot_id)
            else:
                override = aliased(WebhookEndpoint)
                query = query.where(
                    ~exists().where(
                        override.user_id == Event.user_id,
                        override.bot_id == Event.bot_id,
                        Event.id > override.start_event_id,
                    )
                )
            events = list(session.scalars(query.order_by(Event.id).limit(FAN_OUT_BATCH)))
            now = utcnow()
            expires = now + timedelta(seconds=self.settings.webhook_give_up_s)
            for event in events:
                session.add(
                    WebhookDelivery(
                        endpoint_id=endpoint.id,
                        event_id=event.id,
                        bot_id=event.bot_id,
                        payload=envelope(event),
                        status="pending",
                        next_attempt_at=now,
                        expires_at=expires,
                        created_at=now,
                    )
                )
            # All of the endpoint's events up to the horizon are queued unless the batch filled.
            full = len(events) == FAN_OUT_BATCH
            endpoint.cursor = events[-1].id if full else horizon
            return len(events)

    # ---- 2. sending ------------------------------------------------------------------------

    def send_due(self) -> None:
        now = utcnow()
        with self.sessions() as session:
            due = session.execute(
                select(WebhookDelivery.id, WebhookDelivery.endpoint_id)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .where(
                    WebhookDelivery.status == "pending",
                    WebhookDelivery.next_attempt_at <= now,
                    WebhookEndpoint.enabled.is_(True),
                )
                .order_by(WebhookDelivery.event_id, WebhookDelivery.id)
                .limit(self.settings.webhook_batch)
            ).all()
        by_endpoint: dict[str, list[str]] = defaultdict(list)
        for delivery_id, endpoint_id in due:
            by_endpoint[endpoint_id].append(delivery_id)
        futures = {
            endpoint_id: self.pool.submit(self.send_endpoint, ids)
            for endpoint_id, ids in by_endpoint.items()
        }
        for endpoint_id, future in futures.items():
            try:
                future.result()
            except Exception as exc:
                self.last_errors.append(f"send {endpoint_id}: {exc}")
                log.exception("sending webhooks to endpoint %s failed", endpoint_id)

    def send_endpoint(self, delivery_ids: list[str]) -> None:
        """One endpoint's due deliveries in event order; stop at its first failure (it is
        probably down: the rest wait for the next tick, and keep their order when it is up)."""
        for delivery_id in delivery_ids:
            if not self.deliver(delivery_id):
                return

    def deliver(self, delivery_id: str) -> bool:
        """One attempt at one delivery; True unless the attempt failed."""
        try:
            claimed = self.claim(delivery_id)
        except SecretsUnreadable as exc:  # a sealing key dropped too early: retried with backoff
            log.error("webhook delivery %s cannot be signed: %s", delivery_id, exc)
            self.record(delivery_id, status_code=None, error=f"cannot sign: {exc}", duration_ms=0)
            return False
        if claimed is None:
            return True  # delivered, deleted or rescheduled meanwhile
        status_code, error, duration_ms = self.post(claimed)
        self.record(delivery_id, status_code=status_code, error=error, duration_ms=duration_ms)
        return error is None

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
            delivery.next_attempt_at = now + timedelta(
                seconds=self.settings.webhook_timeout_s + CLAIM_MARGIN_S
            )
            secret = self.box.open_text(endpoint.secret_sealed)
            return Claimed(delivery.id, endpoint.url, secret, dict(delivery.payload))

    def post(self, claimed: Claimed) -> tuple[int | None, str | None, int]:
        """POST the signed envelope; (status code, error or None, duration in ms)."""
        body = body_bytes(claimed.payload)
        headers = {
            **sign(claimed.secret, str(claimed.payload["id"]), body),
            "Content-Type": "application/json",
        }
        started = time.monotonic()
        status_code: int | None = None
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
        self, delivery_id: str, *, status_code: int | None, error: str | None, duration_ms: int
    ) -> None:
        with transaction(self.sessions) as session:
            delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
            if delivery is None:
                return  # its endpoint was deleted meanwhile
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
            elif now >= delivery.expires_at:
                delivery.status, delivery.next_attempt_at = "failed", None
                metrics.WEBHOOK_GAVE_UP.inc()
                log.warning("webhook delivery %s gave up: %s", delivery_id, error)
            else:
                delay = retry_delay_s(self.settings, delivery.attempt_count)
                # The last try is at the deadline; failing it gives up.
                retry_at = now + timedelta(seconds=delay)
                delivery.next_attempt_at = min(retry_at, delivery.expires_at)

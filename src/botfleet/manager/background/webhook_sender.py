"""The webhook sender: the leader's tick, in two steps, each isolated from the other's failures.

1. Fan-out: for each enabled endpoint, the outbox `transition` and `report` events (webhook
   types `bot.transition`, `bot.report`) after its cursor (its
   user's, or its bot's for an override; a bot with an override is left out of the default)
   become one delivery each, and the cursor advances, in one transaction with the endpoint row
   locked. Events are read only up to a *horizon*: PostgreSQL hands out ids before commit, so a
   lower id may still be committing when a higher one is visible; a gap is waited for up to
   `webhook_settle_s` (a rolled-back transaction leaves one for good).
2. Sending, fairly: each endpoint is its own queue. A tick takes at most
   `webhook_endpoint_batch` due deliveries per endpoint (its oldest), endpoints taking turns in
   a rotating order up to `webhook_batch` in all, and sends them on a shared pool of
   `webhook_workers` threads with at most `webhook_endpoint_concurrency` requests in flight per
   endpoint: one bot's deliveries stay in one lane, in event order. A lane stops at its first
   failure (the endpoint is probably down: the rest wait for a later tick) and starts nothing
   after the tick's budget (`webhook_tick_budget_s`); the tick returns then, a request still
   running ending within its timeout while its endpoint gets no new lane. Each delivery is
   claimed (its next attempt pushed past the request timeout), POSTed, and its attempt
   recorded: 2xx delivered; otherwise retried with exponential backoff until it expires
   (`failed`). An endpoint that keeps failing is paused by its circuit breaker
   (`manager/services/webhook_breaker.py`); one endpoint's failure never stops the tick.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from botfleet.manager.background.loops import run_steps
from botfleet.manager.core import metrics
from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import Event, utcnow
from botfleet.manager.core.sealing import SecretBox, SecretsUnreadable
from botfleet.manager.core.settings import Settings
from botfleet.manager.core.webhook_models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from botfleet.manager.core.webhook_signing import sign
from botfleet.manager.services import webhook_breaker as breaker
from botfleet.manager.services.webhook_guard import UrlRefused, pin

log = logging.getLogger(__name__)

EVENT_TYPE = "bot.transition"
#: The outbox kinds sent as webhooks, and each one's `type`.
WEBHOOK_TYPES = {"transition": EVENT_TYPE, "report": "bot.report"}
FAN_OUT_BATCH = 500  # events per endpoint per tick
HORIZON_SCAN = 5000  # outbox ids examined per tick for gaps
CLAIM_MARGIN_S = 30  # a claimed delivery is due again after the timeout plus this (a crash)
USER_AGENT = "botfleet-webhooks/1"


def envelope(event: Event) -> dict[str, Any]:
    """The JSON body of one webhook: the outbox event's data, with its id and time."""
    return {
        "type": WEBHOOK_TYPES.get(event.kind, EVENT_TYPE),
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


@dataclass(frozen=True)
class Due:
    """A due delivery, as the tick plans it."""

    delivery_id: str
    endpoint_id: str
    bot_id: str
    probing: bool  # its endpoint's breaker tripped: one attempt at a time (a probe)


def lanes_of(queue: list[Due], slots: int) -> list[list[str]]:
    """Split one endpoint's due deliveries (in event order) into at most `slots` lanes, each
    bot's deliveries in one lane so they stay in order."""
    chains: dict[str, list[str]] = {}
    for due in queue:
        chains.setdefault(due.bot_id, []).append(due.delivery_id)
    lanes: list[list[str]] = [[] for _ in range(min(slots, len(chains)))]
    for index, chain in enumerate(chains.values()):
        lanes[index % len(lanes)].extend(chain)
    return lanes


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
        self.pool = ThreadPoolExecutor(settings.webhook_workers, thread_name_prefix="webhook")
        self.last_errors: list[str] = []
        self._lock = threading.Lock()
        # Lanes running per endpoint, across ticks (a lane may outlive its tick by one request).
        self._in_flight: Counter[str] = Counter()
        self._paused: set[str] = set()  # endpoints whose breaker opened during this tick
        self._next_turn = ""  # the endpoint id the next tick's round starts from

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()

    # ---- driving ---------------------------------------------------------------------------

    def run_once(self) -> None:
        """One tick (its loop is `background/loops.py`'s `IntervalLoop`). A step that fails as a
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
                Event.kind.in_(sorted(WEBHOOK_TYPES)),
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
        """One round: plan the lanes, send them in parallel, return by the tick's budget."""
        deadline = time.monotonic() + self.settings.webhook_tick_budget_s
        self._paused = set()
        futures = []
        for endpoint_id, lane in self.plan(self.due_queues()):
            with self._lock:
                self._in_flight[endpoint_id] += 1
            futures.append(self.pool.submit(self.send_lane, endpoint_id, lane, deadline))
        # Lanes still running at the deadline end with the request they are in, in the
        # background; their endpoints get no new lane meanwhile (`_in_flight`).
        wait(futures, timeout=max(deadline - time.monotonic(), 0.0))

    def due_queues(self) -> dict[str, list[Due]]:
        """Each endpoint's oldest due deliveries, at most `webhook_endpoint_batch` each, in event
        order; paused endpoints are left out (their deliveries wait)."""
        now = utcnow()
        rank = (
            func.row_number()
            .over(
                partition_by=WebhookDelivery.endpoint_id,
                order_by=(WebhookDelivery.event_id, WebhookDelivery.id),
            )
            .label("rank")
        )
        ranked = (
            select(
                WebhookDelivery.id,
                WebhookDelivery.endpoint_id,
                WebhookDelivery.bot_id,
                WebhookEndpoint.pause_s,
                rank,
            )
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= now,
                WebhookEndpoint.enabled.is_(True),
                or_(WebhookEndpoint.paused_until.is_(None), WebhookEndpoint.paused_until <= now),
            )
            .subquery()
        )
        query = (
            select(ranked.c.id, ranked.c.endpoint_id, ranked.c.bot_id, ranked.c.pause_s)
            .where(ranked.c.rank <= self.settings.webhook_endpoint_batch)
            .order_by(ranked.c.endpoint_id, ranked.c.rank)
        )
        queues: dict[str, list[Due]] = {}
        with self.sessions() as session:
            for delivery_id, endpoint_id, bot_id, pause_s in session.execute(query):
                due = Due(delivery_id, endpoint_id, bot_id, probing=pause_s > 0)
                queues.setdefault(endpoint_id, []).append(due)
        return queues

    def plan(self, queues: dict[str, list[Due]]) -> list[tuple[str, list[str]]]:
        """The lanes to send, in the order the pool starts them: every endpoint's first lane
        (endpoints in a rotating order) before any endpoint's second. At most `webhook_batch`
        deliveries in all; the endpoint left out first starts the next round."""
        ids = sorted(queues)
        if not ids:
            return []
        start = bisect_left(ids, self._next_turn) % len(ids)
        order = ids[start:] + ids[:start]
        self._next_turn = order[1] if len(order) > 1 else order[0]
        budget = self.settings.webhook_batch
        planned: list[tuple[str, list[list[str]]]] = []
        for endpoint_id in order:
            if budget <= 0:
                self._next_turn = endpoint_id
                break
            queue = queues[endpoint_id][:budget]
            probing = queue[0].probing
            with self._lock:
                cap = 1 if probing else self.settings.webhook_endpoint_concurrency
                slots = cap - self._in_flight[endpoint_id]
            if slots <= 0:
                continue  # a lane of an earlier tick is still at it
            if probing:
                queue = queue[:1]
            budget -= len(queue)
            planned.append((endpoint_id, lanes_of(queue, slots)))
        return list(_interleave(planned))

    def send_lane(self, endpoint_id: str, delivery_ids: list[str], deadline: float) -> None:
        """One lane of one endpoint, in order; stop at its first failure (the endpoint is
        probably down: the rest wait, and keep their order when it is up), when the endpoint's
        breaker opens, or at the tick's deadline."""
        try:
            for delivery_id in delivery_ids:
                if time.monotonic() >= deadline or endpoint_id in self._paused:
                    return
                if not self.deliver(delivery_id):
                    return
        except Exception as exc:
            with self._lock:
                self.last_errors.append(f"send {endpoint_id}: {exc}")
            log.exception("sending webhooks to endpoint %s failed", endpoint_id)
        finally:
            with self._lock:
                self._in_flight[endpoint_id] -= 1
                if self._in_flight[endpoint_id] <= 0:
                    del self._in_flight[endpoint_id]

    def deliver(self, delivery_id: str) -> bool:
        """One attempt at one delivery; True unless the attempt failed."""
        try:
            claimed = self.claim(delivery_id)
        except SecretsUnreadable as exc:  # a sealing key dropped too early: retried with backoff
            log.error("webhook delivery %s cannot be signed: %s", delivery_id, exc)
            error = f"cannot sign: {exc}"
            self.record(delivery_id, status_code=None, error=error, duration_ms=0, blame=False)
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
            if endpoint.paused_until is not None and endpoint.paused_until > now:
                return None  # its breaker opened meanwhile: the delivery waits
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
        self,
        delivery_id: str,
        *,
        status_code: int | None,
        error: str | None,
        duration_ms: int,
        blame: bool = True,
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
                self._paused.add(endpoint_id)
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


def _interleave(planned: list[tuple[str, list[list[str]]]]) -> Iterable[tuple[str, list[str]]]:
    """Round robin over the endpoints' lanes: (endpoint, lane), first lanes first."""
    for index in range(max((len(lanes) for _, lanes in planned), default=0)):
        for endpoint_id, lanes in planned:
            if index < len(lanes):
                yield endpoint_id, lanes[index]

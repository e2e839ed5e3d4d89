"""Step 2 of the webhook tick: send the due deliveries, fairly between endpoints.

Each endpoint is its own queue. A tick takes at most `webhook_endpoint_batch` due deliveries
per endpoint (its oldest), endpoints taking turns in a rotating order up to `webhook_batch` in
all, and sends them on a shared pool of `webhook_workers` threads with at most
`webhook_endpoint_concurrency` requests in flight per endpoint: one bot's deliveries stay in
one lane, in event order. A lane stops at its first failure (the endpoint is probably down: the
rest wait for a later tick) and starts nothing after the tick's budget
(`webhook_tick_budget_s`); the tick returns then, a request still running ending within its
timeout while its endpoint gets no new lane. An endpoint whose breaker opens (one attempt at a
time while it probes) gets no new attempt in this tick; one endpoint's failure never stops it.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.background.webhook_attempts import WebhookAttempts
from botfleet.manager.core.models import utcnow
from botfleet.manager.core.settings import Settings
from botfleet.manager.core.webhook_models import WebhookDelivery, WebhookEndpoint

log = logging.getLogger(__name__)


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


class WebhookDispatch:
    """Plans each tick's lanes and runs them on a thread pool; `attempts` makes each attempt,
    `note_error` keeps a lane's unexpected failure."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        attempts: WebhookAttempts,
        *,
        note_error: Callable[[str], None],
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.attempts = attempts
        self.note_error = note_error
        self.pool = ThreadPoolExecutor(settings.webhook_workers, thread_name_prefix="webhook")
        self._lock = threading.Lock()
        # Lanes running per endpoint, across ticks (a lane may outlive its tick by one request).
        self._in_flight: Counter[str] = Counter()
        self._paused: set[str] = set()  # endpoints whose breaker opened during this tick
        self._next_turn = ""  # the endpoint id the next tick's round starts from

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def run(self) -> None:
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
                if not self.attempts.deliver(delivery_id, on_pause=self._pause):
                    return
        except Exception as exc:
            self.note_error(f"send {endpoint_id}: {exc}")
            log.exception("sending webhooks to endpoint %s failed", endpoint_id)
        finally:
            with self._lock:
                self._in_flight[endpoint_id] -= 1
                if self._in_flight[endpoint_id] <= 0:
                    del self._in_flight[endpoint_id]

    def _pause(self, endpoint_id: str) -> None:
        """The endpoint's breaker opened: no lane starts another attempt there this tick."""
        self._paused.add(endpoint_id)


def _interleave(planned: list[tuple[str, list[list[str]]]]) -> Iterable[tuple[str, list[str]]]:
    """Round robin over the endpoints' lanes: (endpoint, lane), first lanes first."""
    for index in range(max((len(lanes) for _, lanes in planned), default=0)):
        for endpoint_id, lanes in planned:
            if index < len(lanes):
                yield endpoint_id, lanes[index]

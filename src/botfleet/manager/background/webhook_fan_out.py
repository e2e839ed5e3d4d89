"""Step 1 of the webhook tick: turn new outbox events into one delivery per endpoint.

For each enabled endpoint, the outbox events of the kinds sent as webhooks (`WEBHOOK_TYPES`:
`bot.transition`, `bot.report`, `command.result` once a command ended, `bot.queued`,
`schedule.fired`) after its cursor (its user's, or its bot's for an override; a bot with an
override is left out of the default, not out of the subscriptions) that its filters want (event
types, labels: services/webhook_filters.py) become one delivery each, and the cursor advances,
in one transaction with the endpoint row locked. Events are read only up to a
*horizon*: PostgreSQL hands out ids before commit, so a lower id may still be committing when a
higher one is visible; a gap is waited for up to `webhook_settle_s` (a rolled-back transaction
leaves one for good).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from botfleet.manager.core.db import transaction
from botfleet.manager.core.models import Bot, Event, utcnow
from botfleet.manager.core.settings import Settings
from botfleet.manager.core.webhook_models import WebhookDelivery, WebhookEndpoint
from botfleet.manager.services.webhook_filters import WEBHOOK_TYPES, kinds_for, labels_match, wants

log = logging.getLogger(__name__)

EVENT_TYPE = "bot.transition"
__all__ = ["WEBHOOK_TYPES", "WebhookFanOut", "envelope"]
FAN_OUT_BATCH = 500  # events per endpoint per tick
HORIZON_SCAN = 5000  # outbox ids examined per tick for gaps


def envelope(event: Event) -> dict[str, Any]:
    """The JSON body of one webhook: the outbox event's data, with its id and time."""
    return {
        "type": WEBHOOK_TYPES.get(event.kind, EVENT_TYPE),
        "id": f"evt_{event.id}",
        "timestamp": event.at.isoformat(),
        "data": {"bot_id": event.bot_id, **event.data},  # every kind names its bot
    }


class WebhookFanOut:
    """Queues each enabled endpoint's new events as deliveries; one endpoint's failure is
    noted (`note_error`) and never stops the others."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        *,
        note_error: Callable[[str], None],
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.note_error = note_error

    def run(self) -> None:
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
                self.note_error(f"fan-out {endpoint_id}: {exc}")
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
                Event.kind.in_(kinds_for(endpoint.events)),
            )
            if endpoint.bot_id is not None:
                query = query.where(Event.bot_id == endpoint.bot_id)
            elif not endpoint.subscription:
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
            queued = self.wanted(session, endpoint, events)
            for event in queued:
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
            return len(queued)

    @staticmethod
    def wanted(session: Session, endpoint: WebhookEndpoint, events: list[Event]) -> list[Event]:
        """The events the endpoint's filters want: its types (a command once it ended), then
        its label filter on the bots' labels as they are now (one read per batch)."""
        kept = [e for e in events if wants(endpoint.events, e.kind, e.data)]
        if not endpoint.label_filter or not kept:
            return kept
        bot_ids = sorted({e.bot_id for e in kept})
        labels = dict(session.execute(select(Bot.id, Bot.labels).where(Bot.id.in_(bot_ids))).all())
        return [e for e in kept if labels_match(endpoint.label_filter, labels.get(e.bot_id))]

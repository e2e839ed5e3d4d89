"""The webhook sender: the leader's tick, in two steps, each isolated from the other's failures.

1. Fan-out (`webhook_fan_out.py`): each enabled endpoint's new outbox events become one
   delivery each, up to a horizon that waits for ids still committing.
2. Sending, fairly (`webhook_dispatch.py`): each endpoint is its own queue, endpoints take
   turns, one bot's deliveries stay in order in one lane; each attempt (`webhook_attempts.py`)
   is claimed, signed, POSTed and recorded, retried with backoff, and counted by the
   endpoint's circuit breaker (`manager/services/webhook_breaker.py`).
"""

from __future__ import annotations

import threading

from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.background.loops import run_steps
from botfleet.manager.background.webhook_attempts import Claimed, WebhookAttempts
from botfleet.manager.background.webhook_dispatch import WebhookDispatch
from botfleet.manager.background.webhook_fan_out import WebhookFanOut
from botfleet.manager.core.sealing import SecretBox
from botfleet.manager.core.settings import Settings

__all__ = ["Claimed", "WebhookSender"]


class WebhookSender:
    def __init__(
        self, sessions: sessionmaker[Session], settings: Settings, *, box: SecretBox
    ) -> None:
        self.settings = settings
        self.last_errors: list[str] = []
        self._errors_lock = threading.Lock()
        self.attempts = WebhookAttempts(sessions, settings, box=box)
        self.fan_out_step = WebhookFanOut(sessions, settings, note_error=self._note_error)
        self.dispatch = WebhookDispatch(
            sessions, settings, self.attempts, note_error=self._note_error
        )

    def close(self) -> None:
        self.dispatch.close()
        self.attempts.close()

    def run_once(self) -> None:
        """One tick (its loop is `background/loops.py`'s `IntervalLoop`). A step that fails as a
        whole raises `StepsFailed` once both have run, so the loop counts it; one endpoint's
        failure is tolerated and only kept in `last_errors` (this tick's)."""
        self.last_errors = []
        run_steps((self.fan_out, self.send_due), what="webhook")

    def fan_out(self) -> None:
        self.fan_out_step.run()

    def send_due(self) -> None:
        self.dispatch.run()

    def horizon(self, session: Session, *, floor: int) -> int:
        """The highest outbox id the fan-out may read up to (`WebhookFanOut.horizon`)."""
        return self.fan_out_step.horizon(session, floor=floor)

    def post(self, claimed: Claimed) -> tuple[int | None, str | None, int]:
        """POST one claimed delivery (`WebhookAttempts.post`)."""
        return self.attempts.post(claimed)

    def _note_error(self, message: str) -> None:
        with self._errors_lock:
            self.last_errors.append(message)

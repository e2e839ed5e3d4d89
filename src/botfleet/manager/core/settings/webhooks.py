"""Outbound webhooks (background/webhook_sender.py): pace, retries, fairness, circuit breaker."""

from __future__ import annotations

from pydantic import Field

from botfleet.manager.core.settings.area import SettingsArea


class WebhookSettings(SettingsArea):
    webhook_allow_private: bool = Field(
        False,
        description="Let webhooks reach loopback, private, link-local and other non-public "
        "addresses (refused by default: SSRF).",
    )
    webhook_max_endpoints: int = Field(
        10,
        ge=0,
        le=1000,
        description="Most user-level webhook endpoints a user may have (`POST /webhooks`; the "
        "`PUT /webhook` one counts, bots' own do not); 0: none may be added.",
    )
    webhook_interval_s: float = Field(
        1.0, gt=0, description="How often the leader fans out events and sends due webhooks."
    )
    webhook_timeout_s: float = Field(10.0, gt=0, description="Timeout of one webhook request.")
    webhook_retry_s: float = Field(
        5.0, gt=0, description="First delay before a failed webhook is retried (doubles)."
    )
    webhook_retry_max_s: float = Field(
        3600.0, gt=0, description="Longest delay between two attempts of a webhook."
    )
    webhook_give_up_s: float = Field(
        86_400.0, gt=0, description="A webhook not delivered this long after it was queued fails."
    )
    webhook_batch: int = Field(100, gt=0, description="Most webhooks sent per tick.")
    webhook_endpoint_batch: int = Field(
        10,
        gt=0,
        description="Most due webhooks taken per endpoint per tick; endpoints take turns "
        "(round robin), so one endpoint's backlog never fills a tick.",
    )
    webhook_endpoint_concurrency: int = Field(
        2, gt=0, description="Most webhook requests in flight to one endpoint at once."
    )
    webhook_workers: int = Field(
        8, gt=0, description="Threads sending webhooks (to different endpoints) in parallel."
    )
    webhook_tick_budget_s: float = Field(
        10.0,
        gt=0,
        description="No webhook attempt starts after a tick has run this long (one already "
        "started ends within BOTFLEET_WEBHOOK_TIMEOUT_S); the tick returns then.",
    )
    webhook_settle_s: float = Field(
        10.0,
        gt=0,
        description="A gap in the outbox ids (a transaction still committing) is waited for "
        "this long before webhooks pass it.",
    )

    # Circuit breaker (services/webhook_breaker.py): a failing endpoint is paused, then probed.
    webhook_breaker_failures: int = Field(
        10,
        gt=0,
        description="Failed attempts in a row after which an endpoint is paused (its "
        "deliveries wait).",
    )
    webhook_breaker_failing_s: float = Field(
        600.0,
        ge=0,
        description="An endpoint failing (no success) for this long is paused too, whatever "
        "the count; 0 = by count only.",
    )
    webhook_breaker_pause_s: float = Field(
        60.0,
        gt=0,
        description="First pause of a failing endpoint; then one probe attempt, and each "
        "failed probe doubles the pause.",
    )
    webhook_breaker_pause_max_s: float = Field(
        3600.0, gt=0, description="Longest pause of a failing endpoint."
    )

"""How long history is kept (manager/services/retention.py): housekeeping prunes in batches."""

from __future__ import annotations

from pydantic import Field

from botfleet.manager.core.settings.area import SettingsArea


class RetentionSettings(SettingsArea):
    retain_ended_bots_days: float = Field(
        30.0,
        ge=0,
        description="An ended bot's record and all its history (transitions, commands, "
        "attempts, webhook deliveries, log files) are deleted this long after it ended; "
        "0 keeps them forever.",
    )
    retain_events_days: float = Field(
        7.0,
        ge=0,
        description="Outbox events (GET /events replay) and webhook deliveries older than this "
        "are deleted; 0 keeps them forever.",
    )

"""The budgets handed to bots, and the timeouts derived from them.

Timeouts are derived from the budgets (heartbeat interval, stop grace) so they can never be
shorter than what a healthy bot is allowed to take.
"""

from __future__ import annotations

from pydantic import Field, computed_field

from botfleet.manager.core.settings.area import SettingsArea


class BotBudgetSettings(SettingsArea):
    heartbeat_s: float = Field(10.0, gt=0, description="Seconds between a bot's heartbeats.")
    heartbeats_missed: int = Field(
        3, ge=2, description="Heartbeats a bot may miss before it counts as lost."
    )
    start_timeout_s: float = Field(
        120.0, gt=0, description="How long a bot may stay `starting` before it fails."
    )
    stop_grace_s: float = Field(
        30.0,
        gt=0,
        description="How long a bot may take to leave before it is killed: the one stop budget. "
        "The runtime's leave grace and every backend's SIGTERM → SIGKILL timeout derive from it.",
    )
    kill_after_s: float = Field(
        5.0, gt=0, description="After the stop grace, how long SIGTERM may take before SIGKILL."
    )
    schedule_miss_s: float = Field(
        300.0, gt=0, description="A scheduled start this late is given up (`schedule_missed`)."
    )
    command_ttl_s: float = Field(
        300.0, gt=0, description="An unacknowledged command expires after this long."
    )
    command_retry_s: float = Field(
        5.0, gt=0, description="First delay before an unacknowledged command is re-published."
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def heartbeat_lost_after_s(self) -> float:
        """No heartbeat for this long means the bot is lost (never shorter than its budget)."""
        return self.heartbeat_s * self.heartbeats_missed

    @computed_field  # type: ignore[prop-decorator]
    @property
    def leave_grace_s(self) -> float:
        """The bot's leave-hook budget (BOTFLEET_LEAVE_GRACE_S): two thirds of the stop grace,
        leaving the rest for run() to return and `exited` to be sent before any kill."""
        return round(self.stop_grace_s * 2 / 3, 3)


class HotPathSettings(BotBudgetSettings):
    """What the bots' callbacks hold in memory between writes (manager/hot_path/)."""

    heartbeat_flush_s: float = Field(
        1.0,
        gt=0,
        description="Heartbeats are coalesced in memory and written in one batch this often "
        "(and at least twice per heartbeat interval).",
    )
    heartbeat_buffer_max: int = Field(
        200_000, ge=1, description="Most bots whose heartbeats one manager process holds at once."
    )
    report_min_interval_s: float = Field(
        2.0,
        ge=0,
        le=3600,
        description="A bot's report is written at most once per this many seconds (per manager "
        "process); faster reports are coalesced in memory, the latest winning, and written once "
        "the interval is over.",
    )
    report_buffer_max: int = Field(
        10_000,
        ge=1,
        description="Most bots whose coalesced reports one manager process holds at once (each "
        "up to 16 KiB); past it a report answers 503 and the bot may send it again.",
    )
    credential_cache_size: int = Field(
        100_000,
        ge=0,
        description="Bot tokens and API keys each manager process keeps authenticated in memory; "
        "0 = none (every request reads them from the database).",
    )
    credential_cache_ttl_s: float = Field(
        300.0, gt=0, description="A cached credential is read from the database again after this."
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def heartbeat_flush_interval_s(self) -> float:
        """How often coalesced heartbeats are written: the setting, but never more than half a
        heartbeat interval, so a written heartbeat is never more than one interval late."""
        return min(self.heartbeat_flush_s, self.heartbeat_s / 2)

"""All manager settings in one place, read from `BOTFLEET_*` environment variables.

Created through the cached `get_settings()`, never at import time, so tests and the CLI can set
the environment first. Timeouts are derived from the budgets handed to bots (heartbeat interval,
stop grace) so they can never be shorter than what a healthy bot is allowed to take.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, computed_field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BOTFLEET_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8080, description="Port the API listens on.")
    data_dir: Path = Field(
        Path(".botfleet"),
        description="SQLite file, embedded Redis, process logs and the generated admin token.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; SQLite in the data folder when unset. "
        "PostgreSQL: postgresql+psycopg://user:pass@host/db",
    )
    redis_url: str | None = Field(
        None, description="Redis for bot commands; an embedded redis-server when unset."
    )
    bot_redis_url: str | None = Field(
        None, description="Redis URL handed to bots, when they reach Redis by another address."
    )
    bot_redis_acl: bool = Field(
        True,
        description="Give each bot a Redis ACL user of its own (manager/messaging/bot_acl.py): "
        "it may subscribe to its own command channel and nothing else. Needs Redis ≥ 6.2 and a "
        "manager user allowed to run ACL. false: bots get the shared URL (BOTFLEET_BOT_REDIS_URL "
        "or BOTFLEET_REDIS_URL) and can read and publish on every bot's channel.",
    )
    orchestrator: Literal["process", "docker", "nomad"] = Field(
        "process", description="Which backend runs the bots."
    )
    admin_token: str | None = Field(
        None, description="Bearer token for /admin; generated on first start when unset."
    )
    callback_url: str | None = Field(
        None,
        description="Base URL bots use to call the manager back; http://HOST:PORT when unset.",
    )
    fleet_id: str | None = Field(
        None,
        description="Label of this installation's workloads; generated once and kept in the "
        "database when unset.",
    )
    secrets_keys: str | None = Field(
        None,
        description="Fernet keys sealing bot secrets, comma-separated, newest first; one is "
        "generated into the data folder when unset.",
    )
    allowed_bot_modules: list[str] = Field(
        default_factory=list,
        description="Python modules (and their submodules) whose classes users may run as "
        '`module:Class`, e.g. ["mycompany.bots"]; ["*"] allows any. Built-in bots are always '
        "allowed.",
    )
    allowed_images: list[str] | None = Field(
        None,
        description="Image patterns users may name in `image`, JSON list, e.g. "
        '["registry.internal/bots/*"]: matched on the normalised reference (no tag means '
        '`:latest`, `docker.io/library/x` is `x`), `*` and `?` never cross `/`; `["*"]` '
        "allows any. Unset: the backend's runtime image only (the process backend: none).",
    )
    migrate_on_start: bool = Field(True, description="Run Alembic migrations when serving.")
    bot_firewall: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Firewall rules (iptables, owner match) that reset TCP from the bots' uids "
        "to the database's port and BOTFLEET_BOT_BLOCKED_PORTS on this host (manager/"
        "bot_firewall.py). `auto`: installed when the manager is root and iptables works, else "
        "logged; `on`: the manager refuses to start without them; `off`: none.",
    )
    bot_blocked_ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=list,
        description="Extra TCP ports bots may not open on this host's own addresses, JSON list, "
        "e.g. [4646] (Nomad's API).",
    )

    # Bot budgets and the timeouts derived from them.
    heartbeat_s: float = Field(10.0, gt=0, description="Seconds between a bot's heartbeats.")
    heartbeats_missed: int = Field(
        3, ge=2, description="Heartbeats a bot may miss before it counts as lost."
    )
    start_timeout_s: float = Field(
        120.0, gt=0, description="How long a bot may stay `starting` before it fails."
    )
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
    launch_timeout_s: float = Field(
        60.0,
        gt=0,
        description="A launch that left no workload after this long is retried (a crash "
        "between recording `starting` and reaching the engine).",
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
    reconcile_interval_s: float = Field(
        5.0, gt=0, description="How often the reconciler compares the database with the engine."
    )
    default_max_concurrent_bots: int = Field(
        10, ge=0, description="Limit for users created without one. 0 means no bots at all."
    )
    max_body_bytes: int = Field(1_048_576, gt=0, description="Largest request body accepted.")
    idempotency_claim_timeout_s: float = Field(
        60.0,
        gt=0,
        description="An `Idempotency-Key` claimed this long ago with no answer stored (its "
        "request died) is taken over by the next request with that key.",
    )
    launch_workers: int = Field(16, gt=0, description="Threads that launch and stop workloads.")

    # Database pool and admission (manager/core/db.py, manager/http/admission.py).
    db_pool_size: int = Field(
        20,
        ge=2,
        description="Connections kept in the pool; also how many requests work at once "
        "(the rest wait for a place, on the event loop).",
    )
    db_pool_overflow: int = Field(
        20, ge=0, description="Extra connections opened under load, for launches and loops."
    )
    db_pool_timeout_s: float = Field(
        10.0,
        gt=0,
        description="How long a thread waits for a pooled connection before the request "
        "answers 503 `database_busy`.",
    )
    db_reserved_for_bots: int = Field(
        4,
        ge=1,
        description="Of the pool's places, those kept for bots' callbacks (`/internal/…`), so "
        "users flooding the API never starve heartbeats; must be below BOTFLEET_DB_POOL_SIZE.",
    )
    admission_wait_s: float = Field(
        5.0,
        gt=0,
        description="How long a request waits for a place before it answers 503 "
        "`database_busy` with Retry-After.",
    )

    # Rate limits (manager/http/rate_limit.py): token buckets in Redis, shared by every replica.
    rate_limit_per_s: float = Field(
        20.0, ge=0, description="Requests per second per API key, sustained; 0 = no limit."
    )
    rate_limit_burst: int = Field(40, ge=1, description="Requests per API key in a burst.")
    bot_command_rate_per_s: float = Field(
        2.0,
        ge=0,
        description="Config changes (PATCH/PUT config), custom commands and secrets per second "
        "per bot and API key, on top of the key's own limit; 0 = no limit.",
    )
    bot_command_rate_burst: int = Field(
        10, ge=1, description="Config changes and commands per bot and API key in a burst."
    )
    callback_rate_per_s: float = Field(
        20.0,
        ge=0,
        description="Callbacks per second per bot token (heartbeats, reports, acks): a bot's "
        "own budget, untouched by users' traffic; 0 = no limit.",
    )
    callback_rate_burst: int = Field(100, ge=1, description="Callbacks per bot token in a burst.")

    # Bot logs (orchestrators/log_tail.py caps them; each backend rotates its own files).
    log_tail_max_bytes: int = Field(
        1_048_576, ge=1024, description="Most bytes one `GET /bots/{id}/logs` answers."
    )
    log_line_max_bytes: int = Field(
        16_384,
        ge=256,
        description="Longer log lines are cut, ending with `… [truncated N bytes]`.",
    )
    log_file_max_bytes: int = Field(
        10_485_760,
        ge=65_536,
        description="Size at which a bot's log file is rotated (process: by housekeeping; "
        "docker: json-file max-size; nomad: MaxFileSizeMB, at least 1 MiB).",
    )
    log_files: int = Field(3, ge=1, description="Log files kept per bot, the current one included.")
    max_streams_per_key: int = Field(
        5, ge=1, description="Open streams (`/events`, `logs?follow=1`) per API key and replica."
    )
    bootstrap_user: str | None = Field(
        None,
        description="Create this user with an API key on start when it does not exist "
        "(`make run` uses it to print a ready key).",
    )

    # Outbound webhooks (manager/webhooks/).
    webhook_allow_private: bool = Field(
        False,
        description="Let webhooks reach loopback, private, link-local and other non-public "
        "addresses (refused by default: SSRF).",
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
    # Retention (manager/services/retention.py): housekeeping prunes in small batches.
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
    webhook_settle_s: float = Field(
        10.0,
        gt=0,
        description="A gap in the outbox ids (a transaction still committing) is waited for "
        "this long before webhooks pass it.",
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def heartbeat_lost_after_s(self) -> float:
        """No heartbeat for this long means the bot is lost (never shorter than its budget)."""
        return self.heartbeat_s * self.heartbeats_missed

    @computed_field  # type: ignore[prop-decorator]
    @property
    def heartbeat_flush_interval_s(self) -> float:
        """How often coalesced heartbeats are written: the setting, but never more than half a
        heartbeat interval, so a written heartbeat is never more than one interval late."""
        return min(self.heartbeat_flush_s, self.heartbeat_s / 2)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def leave_grace_s(self) -> float:
        """The bot's leave-hook budget (BOTFLEET_LEAVE_GRACE_S): two thirds of the stop grace,
        leaving the rest for run() to return and `exited` to be sent before any kill."""
        return round(self.stop_grace_s * 2 / 3, 3)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'botfleet.db').resolve()}"

    def resolved_callback_url(self) -> str:
        return self.callback_url or f"http://{self.host}:{self.port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()

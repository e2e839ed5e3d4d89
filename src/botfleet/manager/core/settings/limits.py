"""What one user, key or request may take: bots, bodies, request rates, open streams."""

from __future__ import annotations

from pydantic import Field

from botfleet.manager.core.settings.area import SettingsArea


class LimitSettings(SettingsArea):
    default_max_concurrent_bots: int = Field(
        10, ge=0, description="Limit for users created without one. 0 means no bots at all."
    )
    max_bot_cpu: float = Field(
        4.0,
        gt=0,
        le=256,
        description="The most CPUs one bot may ask for (`resources.cpu` of POST /bots, and of a "
        "kind): more is refused with 422 `resources_over_limit` (default 4).",
    )
    max_bot_memory_mb: int = Field(
        4096,
        gt=0,
        le=1024 * 1024,
        description="The most memory, in MiB, one bot may ask for (`resources.memory_mb` of POST "
        "/bots, and of a kind): more is refused with 422 `resources_over_limit` (default 4096).",
    )
    max_body_bytes: int = Field(1_048_576, gt=0, description="Largest request body accepted.")
    max_json_depth: int = Field(
        32,
        ge=1,
        le=256,
        description="Deepest nesting of arrays and objects in a JSON body (default 32); a deeper "
        "body is refused with 422 `json_too_deep` before it is parsed.",
    )
    idempotency_claim_timeout_s: float = Field(
        60.0,
        gt=0,
        description="An `Idempotency-Key` claimed this long ago with no answer stored (its "
        "request died) is taken over by the next request with that key.",
    )
    max_streams_per_key: int = Field(
        5, ge=1, description="Open streams (`/events`, `logs?follow=1`) per API key and replica."
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
    auth_failure_rate_per_s: float = Field(
        1.0,
        ge=0,
        description="Failed authentications (401) per second per client address, sustained "
        "(default 1): past the burst, a token this replica does not already know is refused "
        "with 429 `too_many_auth_failures` before any database read; 0 = no limit.",
    )
    auth_failure_burst: int = Field(
        20, ge=1, description="Failed authentications per client address in a burst (default 20)."
    )

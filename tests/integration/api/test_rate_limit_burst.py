"""A burst of requests at once must not turn the rate limits off (issue 16).

redis-py's default pool holds 100 connections and raises "Too many connections" past them; the
limiter read that as Redis being down and failed open, so a burst of 150 requests from one key
was served in full. The limiter now waits (briefly) for a pooled connection instead."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Manager, RedisServer, running_manager

BURST = 10
LIMITS = {"BOTFLEET_RATE_LIMIT_PER_S": "0.2", "BOTFLEET_RATE_LIMIT_BURST": str(BURST)}
AT_ONCE = 150


@pytest.fixture
def limited(tmp_path: Path, redis_server: RedisServer) -> Iterator[Manager]:
    with running_manager(tmp_path, redis_server.url, extra_env=LIMITS) as manager:
        yield manager


async def _burst(url: str, key: str) -> list[int]:
    limits = httpx.Limits(max_connections=AT_ONCE, max_keepalive_connections=AT_ONCE)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        answers = await asyncio.gather(
            *(client.get("/bots", headers=headers) for _ in range(AT_ONCE))
        )
    return [a.status_code for a in answers]


def test_a_burst_at_once_is_limited_like_any_other(limited: Manager) -> None:
    user, _ = limited.new_user()
    statuses = asyncio.run(_burst(limited.url, user["api_key"]))
    served = statuses.count(200)
    assert statuses.count(429) >= AT_ONCE - BURST - 2, sorted(set(statuses))
    assert served <= BURST + 2, f"{served} of {AT_ONCE} served with a burst of {BURST}"

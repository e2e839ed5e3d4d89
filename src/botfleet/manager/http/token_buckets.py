"""The rate limiter's side of Redis: the token-bucket script, and pools of connections opened
at start and kept (`manager/http/rate_limit.py` says why)."""

from __future__ import annotations

import asyncio
from typing import Literal

import redis.asyncio as aioredis

#: Redis connections per lane (users' requests; bots' callbacks), all opened at start.
LANE_CONNECTIONS = 16

Lane = Literal["api", "callback"]

#: KEYS: the buckets. ARGV: per bucket, its rate per second and its burst. Spends one token from
#: each when all have one, else none. Returns {allowed (0/1), seconds to wait (string), the
#: 1-based index of the bucket that refused}.
TOKEN_BUCKETS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local levels = {}
local wait = 0
local refused = 0
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(state[1])
  local at = tonumber(state[2])
  if tokens == nil or at == nil then
    tokens = burst
  else
    tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
  end
  levels[i] = tokens
  if tokens < 1 and (1 - tokens) / rate > wait then
    wait = (1 - tokens) / rate
    refused = i
  end
end
local allowed = 1
if wait > 0 then allowed = 0 end
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tokens = levels[i]
  if allowed == 1 then tokens = tokens - 1 end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
end
return {allowed, tostring(wait), refused}
"""


class RedisLane:
    """One pool of connections and its outage state."""

    def __init__(self, redis_url: str, *, timeout_s: float, connections: int) -> None:
        # A bounded pool that requests wait on (up to the timeout): with redis-py's default pool a
        # burst of more than 100 requests at once got "Too many connections" and turned the
        # limits off (failing open) exactly when they matter.
        self.pool = aioredis.BlockingConnectionPool.from_url(
            redis_url,
            max_connections=connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        self.connections = connections
        self.client = aioredis.Redis(connection_pool=self.pool)
        self.script = self.client.register_script(TOKEN_BUCKETS)  # EVALSHA, EVAL on NOSCRIPT
        self.skip_until = 0.0
        self.outage = False

    async def open_all(self) -> None:
        """Open every connection of the pool now and keep them: later, Redis may have no client
        slot left to give (a bot can fill them)."""
        taken = []
        try:
            for _ in range(self.connections):
                taken.append(await self.pool.get_connection())
        finally:
            await asyncio.gather(*(self.pool.release(c) for c in taken))

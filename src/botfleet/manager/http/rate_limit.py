"""Rate limits: token buckets in Redis, so every replica spends one shared budget.

Each request carrying a bearer token spends one token from a bucket:

- an API key's bucket (BOTFLEET_RATE_LIMIT_PER_S / _BURST), for every user-facing route;
- on top of it, the bucket of that key and one bot for the routes that send the bot something
  (PATCH/PUT config, custom commands, secrets: BOTFLEET_BOT_COMMAND_RATE_PER_S / _BURST);
- a bot token's own bucket for the runtime's callbacks (BOTFLEET_CALLBACK_RATE_PER_S /
  _BURST), which users' traffic never touches.

The admin token and the probes are not limited. Over a limit the answer is 429 `rate_limited`
with Retry-After (whole seconds, at least 1), before the request takes a database place.

One Lua script (EVALSHA) checks and spends every bucket of a request atomically, on Redis' own
clock (`TIME`), so replicas with skewed clocks agree. Bucket keys carry a digest prefix of the
token, never the token, and expire once a full bucket would have refilled. Redis down or slow
fails open: the request is served, a metric counts it, and one log line per outage says so; a
Redis outage must not take the API down with it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from botfleet.manager.core.errors import ErrorCode, error_body
from botfleet.manager.core.secrets import bearer_token, digest, same
from botfleet.manager.core.settings import Settings
from botfleet.manager.http.app_state import started

log = logging.getLogger(__name__)

LIMITED = Counter(
    "botfleet_rate_limited_total", "Requests refused with 429 rate_limited", ["bucket"]
)
FAILED_OPEN = Counter(
    "botfleet_rate_limit_failed_open_total",
    "Requests served unlimited because Redis could not be asked",
)

#: Paths never limited: probes and metrics (the API's own health must stay observable).
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
KEY_PREFIX = "botfleet:rl:"
#: Hex digits of the token's SHA-256 in a bucket's key: enough to tell keys apart, useless
#: to authenticate with.
DIGEST_CHARS = 16
#: After Redis failed, how long requests skip it (fail open without waiting for it each time).
BACKOFF_S = 2.0

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


@dataclass(frozen=True)
class Bucket:
    """One budget: its Redis key (no secret in it), refill rate and size, and what it limits."""

    key: str
    per_s: float
    burst: int
    kind: str


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0
    kind: str = ""


def _token_id(token: str) -> str:
    return digest(token)[:DIGEST_CHARS]


#: Methods and path tails that send a bot something: the per-bot command budget applies.
COMMAND_ROUTES = {("PATCH", "config"), ("PUT", "config"), ("POST", "commands"), ("PUT", "secrets")}


def buckets_for(
    settings: Settings, *, method: str, path: str, token: str, admin_token: str
) -> list[Bucket]:
    """The buckets one request spends from; none for the admin, probes or limits set to 0."""
    if path in EXEMPT_PATHS or same(token, admin_token):
        return []
    who = _token_id(token)
    parts = path.strip("/").split("/")
    if parts[0] == "internal":
        if settings.callback_rate_per_s <= 0:
            return []
        return [
            Bucket(
                f"{KEY_PREFIX}bot:{who}",
                settings.callback_rate_per_s,
                settings.callback_rate_burst,
                "callback",
            )
        ]
    found: list[Bucket] = []
    if settings.rate_limit_per_s > 0:
        found.append(
            Bucket(
                f"{KEY_PREFIX}key:{who}",
                settings.rate_limit_per_s,
                settings.rate_limit_burst,
                "key",
            )
        )
    # /bots/{id}/config, /bots/{id}/commands, /bots/{id}/secrets; the bot's id is the caller's
    # own say, so the bucket is the key's (another user cannot spend this user's budget).
    if (
        settings.bot_command_rate_per_s > 0
        and len(parts) == 3
        and parts[0] == "bots"
        and (method, parts[2]) in COMMAND_ROUTES
        and 0 < len(parts[1]) <= 64
    ):
        found.append(
            Bucket(
                f"{KEY_PREFIX}cmd:{who}:{parts[1]}",
                settings.bot_command_rate_per_s,
                settings.bot_command_rate_burst,
                "bot_command",
            )
        )
    return found


class RateLimiter:
    """Spends tokens from buckets in Redis; fails open when Redis cannot be asked."""

    def __init__(self, redis_url: str, *, timeout_s: float = 0.5, connections: int = 64) -> None:
        # A bounded pool that requests wait on (up to the timeout): with redis-py's default pool a
        # burst of more than 100 requests at once got "Too many connections" and turned the
        # limits off (failing open) exactly when they matter.
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url,
            max_connections=connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        self.client = aioredis.Redis(connection_pool=pool)
        self.script = self.client.register_script(TOKEN_BUCKETS)  # EVALSHA, EVAL on NOSCRIPT
        self._skip_until = 0.0
        self._outage = False
        # Buckets Redis just found empty, and until when (monotonic): no token can appear in
        # them before then, so a flood is refused without a round trip each time.
        self._empty_until: dict[str, tuple[float, str]] = {}

    async def close(self) -> None:
        await self.client.aclose()

    async def spend(self, buckets: list[Bucket]) -> Verdict:
        if not buckets:
            return Verdict(True)
        now = time.monotonic()
        for bucket in buckets:
            until, kind = self._empty_until.get(bucket.key, (0.0, ""))
            if now < until:
                return Verdict(False, max(1, math.ceil(until - now)), kind)
        if now < self._skip_until:
            FAILED_OPEN.inc()
            return Verdict(True)
        args: list[float | int] = []
        for bucket in buckets:
            args += [bucket.per_s, bucket.burst]
        try:
            allowed, wait, refused = await self.script(keys=[b.key for b in buckets], args=args)
        except (RedisError, OSError) as exc:
            self._skip_until = time.monotonic() + BACKOFF_S
            FAILED_OPEN.inc()
            if not self._outage:
                self._outage = True
                log.warning("rate limits off while Redis cannot be asked (failing open): %s", exc)
            return Verdict(True)
        if self._outage:
            self._outage = False
            log.info("rate limits back on: Redis answers again")
        if int(allowed):
            return Verdict(True)
        over = buckets[max(0, int(refused) - 1)]
        if len(self._empty_until) > 10_000:  # bounded: drop what has refilled
            self._empty_until = {k: v for k, v in self._empty_until.items() if v[0] > now}
        self._empty_until[over.key] = (now + float(wait), over.kind)
        return Verdict(False, max(1, math.ceil(float(wait))), over.kind)


class RateLimit:
    """ASGI middleware applying the app's `RateLimiter` (its `AppState`, built in the
    lifespan) to every request that carries a bearer token."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = started(scope.get("app")) if scope["type"] == "http" else None
        token = bearer_token(Headers(scope=scope).get("authorization")) if state else None
        if state is None or token is None:
            await self.app(scope, receive, send)
            return
        limiter = state.rate_limiter
        buckets = buckets_for(
            state.settings,
            method=scope["method"],
            path=scope["path"],
            token=token,
            admin_token=state.admin_token,
        )
        verdict = await limiter.spend(buckets)
        if verdict.allowed:
            await self.app(scope, receive, send)
            return
        LIMITED.labels(verdict.kind).inc()
        what = {
            "key": "this API key",
            "bot_command": "commands to this bot",
            "callback": "this bot's callbacks",
        }[verdict.kind]
        response = JSONResponse(
            error_body(
                ErrorCode.RATE_LIMITED,
                f"too many requests for {what}; retry in {verdict.retry_after_s} s",
                retry_after_s=verdict.retry_after_s,
            ),
            429,
            headers={"Retry-After": str(verdict.retry_after_s)},
        )
        await response(scope, receive, send)

"""Rate limits: token buckets in Redis, so every replica spends one shared budget.

Each request carrying a bearer token spends one token from a bucket:

- an API key's bucket (BOTFLEET_RATE_LIMIT_PER_S / _BURST), for every user-facing route;
- on top of it, the bucket of that key and one bot for the routes that send the bot something
  (PATCH/PUT config, custom commands, secrets: BOTFLEET_BOT_COMMAND_RATE_PER_S / _BURST);
- a bot token's own bucket for the runtime's callbacks (BOTFLEET_CALLBACK_RATE_PER_S /
  _BURST), which users' traffic never touches.

The admin token and the probes are not limited. Over a limit the answer is 429 `rate_limited`
with Retry-After (whole seconds, at least 1), before the request takes a database place.

Failed authentications have a budget per client address (BOTFLEET_AUTH_FAILURE_RATE_PER_S /
_BURST; an IPv6 client by its /64; users' requests and bots' callbacks each have their own):
each 401 spends one token, and once the budget is spent a request whose token this replica's
credential cache does not already know is answered 429 `too_many_auth_failures` here, before
anything reads the database for it. Random bearer tokens
at a high rate cost the database one read per refill; a client with a valid key that it has
used before is unaffected, even from the same address.

One Lua script (EVALSHA) checks and spends every bucket of a request atomically, on Redis' own
clock (`TIME`), so replicas with skewed clocks agree. Bucket keys carry a digest prefix of the
token, never the token, and expire once a full bucket would have refilled. Redis down or slow
fails open: the request is served, a metric counts it, and one log line per outage says so; a
Redis outage must not take the API down with it.

The limiter's Redis connections are its own, opened at start and kept: users' requests and bots'
callbacks each have a pool of their own (neither can hold the other's connections), and no
request ever needs a new connection, so a bot that fills Redis' client slots (maxclients) does
not turn the limits off.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from botfleet.manager.core.errors import ErrorCode, error_body
from botfleet.manager.core.secrets import bearer_token, digest, same
from botfleet.manager.core.settings import Settings
from botfleet.manager.http.app_state import AppState, started
from botfleet.manager.http.token_buckets import LANE_CONNECTIONS, Lane, RedisLane

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


def client_address(scope: Scope) -> str | None:
    """Who is asking, as the failure budget counts: the address, an IPv6 one by its /64 (one
    host's share of a network)."""
    client = scope.get("client")
    if not client:
        return None
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return str(client[0])
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False).network_address) + "/64"
    return str(address)


def failure_bucket(state: AppState, scope: Scope) -> Bucket | None:
    """The budget of failed authentications of the request's client address, one per fleet
    (the replicas of a fleet share it) and per lane: bots' failed callbacks (a bot whose token
    died with it) never spend the budget of users' requests from the same address."""
    settings = state.settings
    address = client_address(scope)
    if settings.auth_failure_rate_per_s <= 0 or address is None:
        return None
    fleet = state.launcher.fleet_id
    return Bucket(
        f"{KEY_PREFIX}authfail:{fleet}:{lane_of(scope['path'])}:{address}",
        settings.auth_failure_rate_per_s,
        settings.auth_failure_burst,
        "auth_failure",
    )


def lane_of(path: str) -> Lane:
    return "callback" if path.startswith("/internal/") else "api"


class RateLimiter:
    """Spends tokens from buckets in Redis; fails open when Redis cannot be asked."""

    def __init__(
        self, redis_url: str, *, timeout_s: float = 0.5, connections: int = LANE_CONNECTIONS
    ) -> None:
        self.lanes: dict[Lane, RedisLane] = {
            lane: RedisLane(redis_url, timeout_s=timeout_s, connections=connections)
            for lane in ("api", "callback")
        }
        # Buckets Redis just found empty, and until when (monotonic): no token can appear in
        # them before then, so a flood is refused without a round trip each time.
        self._empty_until: dict[str, tuple[float, str]] = {}

    @property
    def client(self) -> aioredis.Redis:
        """The users' lane's client (also the dashboard's: manager/ui/session_guard.py)."""
        return self.lanes["api"].client

    async def start(self) -> None:
        """Open the lanes' connections (a Redis that cannot be reached now: they open later)."""
        try:
            for lane in self.lanes.values():
                await lane.open_all()
        except (RedisError, OSError) as exc:
            log.warning("rate limiter: Redis connections not opened at start: %s", exc)

    async def close(self) -> None:
        for lane in self.lanes.values():
            await lane.client.aclose()
            await lane.pool.disconnect()

    def refused_until(self, key: str) -> int:
        """Seconds until the bucket `key` has a token again, as last seen empty (0: not known
        empty). Asks no one: it is the check that must cost nothing."""
        until, _ = self._empty_until.get(key, (0.0, ""))
        return max(0, math.ceil(until - time.monotonic()))

    async def spend(self, buckets: list[Bucket], lane: Lane = "api") -> Verdict:
        if not buckets:
            return Verdict(True)
        now = time.monotonic()
        for bucket in buckets:
            until, kind = self._empty_until.get(bucket.key, (0.0, ""))
            if now < until:
                return Verdict(False, max(1, math.ceil(until - now)), kind)
        redis_lane = self.lanes[lane]
        if now < redis_lane.skip_until:
            FAILED_OPEN.inc()
            return Verdict(True)
        args: list[float | int] = []
        for bucket in buckets:
            args += [bucket.per_s, bucket.burst]
        try:
            allowed, wait, refused = await redis_lane.script(
                keys=[b.key for b in buckets], args=args
            )
        except (RedisError, OSError) as exc:
            redis_lane.skip_until = time.monotonic() + BACKOFF_S
            FAILED_OPEN.inc()
            if not redis_lane.outage:
                redis_lane.outage = True
                log.warning(
                    "rate limits off (%s) while Redis cannot be asked (failing open): %s", lane, exc
                )
            return Verdict(True)
        if redis_lane.outage:
            redis_lane.outage = False
            log.info("rate limits back on (%s): Redis answers again", lane)
        if int(allowed):
            return Verdict(True)
        over = buckets[max(0, int(refused) - 1)]
        if len(self._empty_until) > 10_000:  # bounded: drop what has refilled
            self._empty_until = {k: v for k, v in self._empty_until.items() if v[0] > now}
        self._empty_until[over.key] = (now + float(wait), over.kind)
        return Verdict(False, max(1, math.ceil(float(wait))), over.kind)


def _known(state: AppState, token: str) -> bool:
    """Whether the token is one this replica has already authenticated (cached): it costs no
    database read, so a spent failure budget does not refuse it."""
    if same(token, state.admin_token):
        return True
    cache = state.credentials
    return cache is not None and cache.knows(digest(token))


LIMITS_SAID = {
    "key": "this API key",
    "bot_command": "commands to this bot",
    "callback": "this bot's callbacks",
}


def _refusal(verdict: Verdict) -> JSONResponse:
    if verdict.kind == "auth_failure":
        body = error_body(
            ErrorCode.TOO_MANY_AUTH_FAILURES,
            "too many failed authentications from this address; "
            f"retry in {verdict.retry_after_s} s",
            retry_after_s=verdict.retry_after_s,
        )
    else:
        body = error_body(
            ErrorCode.RATE_LIMITED,
            f"too many requests for {LIMITS_SAID[verdict.kind]}; "
            f"retry in {verdict.retry_after_s} s",
            retry_after_s=verdict.retry_after_s,
        )
    return JSONResponse(body, 429, headers={"Retry-After": str(verdict.retry_after_s)})


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
        lane = lane_of(scope["path"])
        failures = failure_bucket(state, scope)
        # This address' failures spent: no database read for a token not already known. Asked
        # in that order: the token's digest is worth computing only for a blocked address.
        wait = limiter.refused_until(failures.key) if failures is not None else 0
        if wait and not _known(state, token):
            LIMITED.labels("auth_failure").inc()
            await _refusal(Verdict(False, wait, "auth_failure"))(scope, receive, send)
            return
        buckets = buckets_for(
            state.settings,
            method=scope["method"],
            path=scope["path"],
            token=token,
            admin_token=state.admin_token,
        )
        verdict = await limiter.spend(buckets, lane)
        if not verdict.allowed:
            LIMITED.labels(verdict.kind).inc()
            await _refusal(verdict)(scope, receive, send)
            return
        if failures is None:
            await self.app(scope, receive, send)
            return

        async def counting_failures(message: Message) -> None:
            # Spent before the 401 leaves: the client's next request already sees the budget.
            if message["type"] == "http.response.start" and message["status"] == 401:
                await limiter.spend([failures], lane)
            await send(message)

        await self.app(scope, receive, counting_failures)

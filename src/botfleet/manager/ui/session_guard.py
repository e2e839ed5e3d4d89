"""What the sealed session cookie cannot do alone (issue 27): end a session on the server, refuse
a sign-in form posted from another site, and limit wrong sign-ins per source address.

- Sign-out records the cookie's session id in Redis until the cookie would have expired anyway,
  and every dashboard request checks that record: a copy of the cookie is refused after sign-out,
  on every replica (they share Redis).
- A sign-in POST whose `Origin` is not this dashboard's own (or whose `Sec-Fetch-Site` says
  cross-site or same-site) is refused with 403 `cross_origin`; a request with no `Origin` is no
  browser's form post, so no cross-site request forgery.
- Failed sign-ins are counted per source address in Redis, BOTFLEET_AUTH_FAILURE_BURST per
  window of burst / BOTFLEET_AUTH_FAILURE_RATE_PER_S seconds; past it, sign-in answers 429
  `too_many_auth_failures` before reading the database.

Redis unreachable fails open, as the rate limiter does: sessions are checked without the
sign-out record and sign-ins without the count (one log line per outage).
"""

from __future__ import annotations

import logging
import math
import time
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.requests import Request

from botfleet.manager.http.deps import app_state
from botfleet.manager.http.rate_limit import client_address

log = logging.getLogger(__name__)

SIGNED_OUT_PREFIX = "botfleet:ui:signed-out:"
FAILURES_PREFIX = "botfleet:ui:sign-in-failures:"
_outage = {"on": False}


def _redis(request: Request) -> aioredis.Redis:
    return app_state(request).rate_limiter.client


def _redis_failed(exc: Exception) -> None:
    if not _outage["on"]:
        _outage["on"] = True
        log.warning("dashboard sign-out records and sign-in counts off (Redis): %s", exc)


def _redis_answered() -> None:
    if _outage["on"]:
        _outage["on"] = False
        log.info("dashboard sign-out records and sign-in counts back on: Redis answers again")


async def is_signed_out(request: Request, session_id: str) -> bool:
    """True once the session `session_id` was signed out (on any replica)."""
    try:
        found = await _redis(request).exists(SIGNED_OUT_PREFIX + session_id)
    except (RedisError, OSError) as exc:
        _redis_failed(exc)
        return False
    _redis_answered()
    return bool(found)


async def record_sign_out(request: Request, session_id: str, expires_at: float) -> None:
    """Refuse the session from now until `expires_at` (epoch seconds), when its cookie would
    have been refused anyway: the record outlives every copy of the cookie, and no longer."""
    ttl = max(1, math.ceil(expires_at - time.time()))
    try:
        await _redis(request).set(SIGNED_OUT_PREFIX + session_id, "1", ex=ttl)
    except (RedisError, OSError) as exc:
        _redis_failed(exc)
        log.warning("sign-out not recorded (Redis): the cookie stays valid until it expires")
        return
    _redis_answered()


def _host_and_port(netloc: str, scheme: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return None
    return (parts.hostname or "").lower(), port or (443 if scheme == "https" else 80)


def cross_origin(request: Request) -> str | None:
    """Why this form post comes from another site, or None when it is the dashboard's own (or
    no browser's: without `Origin`).

    The dashboard's pages say `Referrer-Policy: no-referrer`, under which a browser sends its own
    same-origin form posts with `Origin: null`; `Sec-Fetch-Site` (a header no page can set) then
    tells them apart: `same-origin` is ours, `null` without it is refused."""
    site = request.headers.get("sec-fetch-site")
    if site in ("cross-site", "same-site"):
        return f"the browser says this form was posted from another site ({site})"
    origin = request.headers.get("origin")
    if origin is None:
        return None
    if origin == "null":
        return None if site == "same-origin" else "a form posted from an opaque origin (null)"
    try:
        parts = urlsplit(origin)
    except ValueError:
        parts = urlsplit("")
    host = request.headers.get("host", "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"a form posted from origin {origin[:100]!r}"
    if _host_and_port(parts.netloc, parts.scheme) != _host_and_port(host, parts.scheme):
        return f"a form posted from {origin[:100]!r}, not from this dashboard"
    return None


def _failures_key(request: Request) -> str:
    """Counted by the address as the API's failure budget counts it (an IPv6 client by its /64:
    one host cannot rotate addresses inside its own network to get new tries)."""
    return FAILURES_PREFIX + (client_address(request.scope) or "unknown")


def _window_s(request: Request) -> tuple[int, int] | None:
    """(failures allowed, window in seconds), None when the limit is off."""
    settings = app_state(request).settings
    if settings.auth_failure_rate_per_s <= 0:
        return None
    burst = settings.auth_failure_burst
    return burst, max(1, math.ceil(burst / settings.auth_failure_rate_per_s))


async def sign_in_wait_s(request: Request) -> int:
    """Seconds this address must wait before it may try to sign in again (0: it may now)."""
    limit = _window_s(request)
    if limit is None:
        return 0
    try:
        async with _redis(request).pipeline(transaction=False) as pipe:
            pipe.get(_failures_key(request))
            pipe.pttl(_failures_key(request))
            count, pttl = await pipe.execute()
    except (RedisError, OSError) as exc:
        _redis_failed(exc)
        return 0
    _redis_answered()
    if count is None or int(count) < limit[0]:
        return 0
    return max(1, math.ceil(int(pttl) / 1000)) if int(pttl) > 0 else 1


async def count_failed_sign_in(request: Request) -> None:
    limit = _window_s(request)
    if limit is None:
        return
    key = _failures_key(request)
    try:
        async with _redis(request).pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=limit[1], nx=True)  # the window starts at its first failure
            pipe.incr(key)
            await pipe.execute()
    except (RedisError, OSError) as exc:
        _redis_failed(exc)

"""Standard Webhooks signatures (https://github.com/standard-webhooks/standard-webhooks).

The secret is `whsec_` + base64 of random bytes; the key is those bytes. Each request carries
`webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256
of "{id}.{timestamp}.{body}">` (a space-separated list, so a rotated secret can sign alongside).
Receivers can verify with any Standard Webhooks library, or with `verify()` below.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec asks for at least 24
DEFAULT_TOLERANCE_S = 300


class InvalidSignature(Exception):
    """The request was not signed with this secret, or too long ago (a replay)."""


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature of one request."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign(secret: str, msg_id: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """The three headers that sign `body` (the exact bytes sent)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature(secret, msg_id, ts, body),
    }


def verify(
    secret: str,
    headers: dict[str, str],
    body: bytes,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Raise InvalidSignature unless one `v1` signature in `headers` matches `body` and the
    timestamp is within `tolerance_s` of now. Header names are case-insensitive."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        ts = int(lower["webhook-timestamp"])
        offered = lower["webhook-signature"].split()
    except (KeyError, ValueError) as exc:
        raise InvalidSignature("missing or malformed webhook-* headers") from exc
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        raise InvalidSignature("timestamp outside the tolerance (a replay?)")
    expected = signature(secret, msg_id, ts, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise InvalidSignature("no signature matches")

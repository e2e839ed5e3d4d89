"""Secrets the manager hands out: API keys, bot tokens, the admin token.

All are long random strings, so a SHA-256 digest is a safe stored form (no slow hash needed),
lookups go by digest, and every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_KEY_PREFIX = "bf_"
BOT_TOKEN_PREFIX = "bft_"


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None

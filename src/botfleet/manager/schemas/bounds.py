"""What every request body shares: strict parsing, and the size bounds that keep one bot's
data from weighing on everyone's database."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints

MAX_CONFIG_BYTES = 64 * 1024
MAX_CONFIG_DEPTH = 16
MAX_SECRETS = 64
#: A bot's secrets as compact JSON, at most. The nomad backend writes the token and the secrets
#: as one Nomad Variable, which Nomad refuses over 64 KiB of keys and values (nomad/structs/
#: variables.go, maxVariableSize = 65536, `VariableDecrypted.Validate`): 4 KiB are left for the
#: token, the bot's Redis URL, the variable names and JSON's spaces, so no launch fails on it.
MAX_SECRETS_BYTES = 60 * 1024

ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


class Strict(BaseModel):
    """Request bodies: unknown fields and type coercion ("5" for 5, "yes" for true) refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


def json_size(value: Any) -> int:
    """Bytes of `value` as compact JSON, as it is stored."""
    return len(json.dumps(value, separators=(",", ":")))


def json_depth(value: Any) -> int:
    """Levels of nested objects and arrays in `value` (a scalar is 0)."""
    if isinstance(value, dict):
        return 1 + max((json_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((json_depth(v) for v in value), default=0)
    return 0


def in_utc_range(value: datetime) -> bool:
    """Whether an aware time has a UTC form: the database keeps UTC, and year 1 at +01:00 (or
    9999-12-31 late at -01:00) has none."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        return False
    return True


def check_config(value: dict[str, Any]) -> dict[str, Any]:
    """Bounded size and nesting, so one bot's config cannot weigh on everyone's database."""
    if json_size(value) > MAX_CONFIG_BYTES:
        raise ValueError(f"config is larger than {MAX_CONFIG_BYTES} bytes")
    if json_depth(value) > MAX_CONFIG_DEPTH:
        raise ValueError(f"config is nested deeper than {MAX_CONFIG_DEPTH} levels")
    return value


def check_secrets(value: dict[str, str]) -> dict[str, str]:
    """At most MAX_SECRETS names and MAX_SECRETS_BYTES: the same bound at POST /bots and PUT
    secrets (a relaunch copies bounded secrets)."""
    if len(value) > MAX_SECRETS:
        raise ValueError(f"at most {MAX_SECRETS} secrets")
    if json_size(value) > MAX_SECRETS_BYTES:
        raise ValueError(f"secrets are larger than {MAX_SECRETS_BYTES} bytes as compact JSON")
    return value

"""The runtime environment: the one owner of the variables a bot is started with.

The manager renders a `RuntimeEnv` into environment variables (`render`), the runtime parses them
back (`from_environ`); both use the names below, so no side re-spells or guesses them. The table
of variables is docs/how-to/write-a-bot.md. `render` also says which variables are
secret (the bot token, the bot's secrets, a Redis URL with a password), so that a backend puts
them where only the workload can read them, never in labels, metadata, logs or a command line.

Parsing everything up front means a misconfigured launch fails at once with the variable's
name, instead of half-way through a meeting. Plain dataclasses: the runtime needs nothing beyond the
standard library (runtime/http.py, runtime/redis_sub.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from botfleet.runtime.protocol import command_channel

BOT_ID: Final = "BOTFLEET_BOT_ID"
BOT_TOKEN: Final = "BOTFLEET_BOT_TOKEN"
CALLBACK_URL: Final = "BOTFLEET_CALLBACK_URL"
REDIS_URL: Final = "BOTFLEET_REDIS_URL"
COMMAND_CHANNEL: Final = "BOTFLEET_COMMAND_CHANNEL"
BOT: Final = "BOTFLEET_BOT"
BOT_CONFIG: Final = "BOTFLEET_BOT_CONFIG"
BOT_SECRETS: Final = "BOTFLEET_BOT_SECRETS"
HEARTBEAT_S: Final = "BOTFLEET_HEARTBEAT_S"
#: The bot's persistent directory (its `state_key`), as the workload sees it; absent without one.
STATE_DIR: Final = "BOTFLEET_STATE_DIR"
#: How long the bot's leave hook may take; the manager derives it from its stop grace.
LEAVE_GRACE_S: Final = "BOTFLEET_LEAVE_GRACE_S"
#: An inherited file descriptor (a pipe) carrying the secret variables as one JSON object, for
#: backends that keep secrets out of the environment (the process backend: /proc/PID/environ).
SECRET_ENV_FD: Final = "BOTFLEET_SECRET_ENV_FD"

DEFAULT_HEARTBEAT_S = 10.0
DEFAULT_LEAVE_GRACE_S = 20.0


class RuntimeConfigError(ValueError):
    """A required variable is missing or a value cannot be parsed."""


@dataclass(frozen=True)
class RenderedEnv:
    """A runtime environment as variables: `env` is public, `secret_env` only for the workload."""

    env: dict[str, str]
    secret_env: dict[str, str]


@dataclass(frozen=True)
class RuntimeEnv:
    """Everything the runtime is started with. `token` and `secrets` stay out of the repr."""

    bot_id: str
    token: str = field(repr=False)
    callback_url: str
    redis_url: str = field(repr=False)  # may embed a Redis password
    command_channel: str
    bot: str
    config: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    leave_grace_s: float = DEFAULT_LEAVE_GRACE_S
    state_dir: str | None = None

    def render(self) -> RenderedEnv:
        """The variables a backend hands to the workload, split into public and secret."""
        env = {
            BOT_ID: self.bot_id,
            CALLBACK_URL: self.callback_url,
            COMMAND_CHANNEL: self.command_channel,
            BOT: self.bot,
            BOT_CONFIG: json.dumps(self.config),
            HEARTBEAT_S: str(self.heartbeat_s),
            LEAVE_GRACE_S: str(self.leave_grace_s),
        }
        if self.state_dir:
            env[STATE_DIR] = self.state_dir
        secret_env = {BOT_TOKEN: self.token}
        if self.secrets:
            secret_env[BOT_SECRETS] = json.dumps(self.secrets)
        if _has_password(self.redis_url):
            secret_env[REDIS_URL] = self.redis_url
        else:
            env[REDIS_URL] = self.redis_url
        return RenderedEnv(env=env, secret_env=secret_env)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> RuntimeEnv:
        bot_id = _required(environ, BOT_ID)
        return cls(
            bot_id=bot_id,
            token=_required(environ, BOT_TOKEN),
            callback_url=_required(environ, CALLBACK_URL).rstrip("/"),
            redis_url=_required(environ, REDIS_URL),
            command_channel=environ.get(COMMAND_CHANNEL) or command_channel(bot_id),
            bot=_required(environ, BOT),
            config=_json_object(environ, BOT_CONFIG),
            secrets=_secrets(environ),
            heartbeat_s=_seconds(environ, HEARTBEAT_S, DEFAULT_HEARTBEAT_S),
            leave_grace_s=_seconds(environ, LEAVE_GRACE_S, DEFAULT_LEAVE_GRACE_S),
            state_dir=_absolute_path(environ, STATE_DIR),
        )


def with_secret_env(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` plus the secret variables read from the `SECRET_ENV_FD` pipe, if it names one.

    The pipe is read to EOF and closed, so the secrets live in this process's memory only (never
    in os.environ: the bot's own children would inherit them). Without the variable, `environ`
    is returned as it is (Docker and Nomad hand secrets through the environment).
    """
    merged = dict(environ)
    raw_fd = merged.pop(SECRET_ENV_FD, "").strip()
    if not raw_fd:
        return merged
    try:
        fd = int(raw_fd)
    except ValueError:
        raise RuntimeConfigError(f"{SECRET_ENV_FD} must be a file descriptor number") from None
    try:
        with open(fd, "rb") as pipe:  # closes the descriptor
            data = pipe.read()
    except OSError as exc:
        raise RuntimeConfigError(f"cannot read {SECRET_ENV_FD} ({fd}): {exc.strerror}") from None
    try:
        secret_env = json.loads(data) if data.strip() else {}
    except ValueError as exc:
        raise RuntimeConfigError(f"{SECRET_ENV_FD} is not valid JSON: {exc}") from None
    if not isinstance(secret_env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in secret_env.items()
    ):
        raise RuntimeConfigError(f"{SECRET_ENV_FD} must carry a JSON object of strings")
    return merged | secret_env


def _has_password(url: str) -> bool:
    """A URL that cannot be parsed counts as secret: better hidden than leaked."""
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return True


def _required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise RuntimeConfigError(f"{name} is required but not set")
    return value


def _json_object(environ: Mapping[str, str], name: str) -> dict[str, Any]:
    raw = environ.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        # JSONDecodeError names a position, never the text: the value may hold secrets.
        raise RuntimeConfigError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RuntimeConfigError(f"{name} must be a JSON object")
    return value


def _secrets(environ: Mapping[str, str]) -> dict[str, str]:
    secrets = _json_object(environ, BOT_SECRETS)
    if not all(isinstance(v, str) for v in secrets.values()):
        raise RuntimeConfigError(f"{BOT_SECRETS} must map names to strings")
    return secrets


def _absolute_path(environ: Mapping[str, str], name: str) -> str | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    if not raw.startswith("/"):
        raise RuntimeConfigError(f"{name} must be an absolute path, got {raw!r}")
    return raw


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise RuntimeConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value > 0:
        raise RuntimeConfigError(f"{name} must be positive, got {raw!r}")
    return value

"""The base class every bot subclasses: a handful of async hooks the runtime calls in order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

from botfleet.runtime.declare import (
    INVALID_CONFIG,
    MISSING_SECRET,
    CommandSpec,
    Refused,
    check_config_model,
    collect_commands,
    declared_secrets,
    validate,
)
from botfleet.runtime.declare import command as command  # `from botfleet.runtime.bot import …`
from botfleet.runtime.protocol import MAX_REPORT_BYTES, UNKNOWN_ACTION, json_size

# Leave reasons the runtime reports in its `leaving` callback.
LEAVE_COMMAND = "leave_requested"
LEAVE_SIGTERM = "sigterm"
LEAVE_SIGINT = "sigint"
LEAVE_BY_BOT = "bot_leaving"


class UnknownAction(Exception):
    """Raised by `Bot.on_command` for an action the bot does not answer; the command fails
    with the error `unknown_action`."""

    def __init__(self, action: str) -> None:
        super().__init__(f"{UNKNOWN_ACTION}: the bot has no command {action!r}")
        self.action = action


class BotFailed(Exception):
    """Raise from ``on_start`` or ``run`` to end the bot ``failed`` with a reason of its own
    (a stable snake_case code, e.g. ``platform_unauthorized``) instead of ``crashed``; the
    runtime reports it in ``exited`` with exit code 1. The manager's restart policy never
    retries the reasons it lists as permanent (``PERMANENT_FAILURE_REASONS``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


class Bot:
    """Subclass and override the hooks; the runtime owns callbacks, commands and signals.

    Order: ``on_start`` (return once joined; raising reports ``start_failed``), then ``run``
    (the bot's work; returning means a natural finish with exit 0, or the int it returns;
    raising reports ``crashed``). When a ``leave`` command, SIGTERM or ``request_leave`` arrives,
    the runtime calls ``on_leave`` (within a grace period), then cancels ``run`` if it is still
    going, and exits 0. ``on_reconfigure`` may run at any time after construction; raise to
    refuse, and the error text is sent in the ack. After it succeeds ``self.config`` is the new
    config.

    ``on_command(action, payload)`` answers a custom command: its JSON return value becomes the
    command's ``result`` (at most 64 KiB), raising fails the command with the error's message.
    The default calls the method declared with ``@command(action)``
    (``botfleet.runtime.declare``) and raises ``UnknownAction`` for any other action.
    ``on_secrets(secrets)`` receives the bot's new secrets after ``PUT /bots/{id}/secrets``;
    ``self.secrets`` is the new set afterwards.
    ``await self.report({...})`` tells the operator something (latest wins; at most 16 KiB).

    Example::

        class EchoBot(Bot):
            async def on_start(self) -> None:
                self.session = await join(self.config["meeting_url"], self.secrets["api_key"])

            async def on_leave(self) -> None:
                await self.session.hang_up()

    Declarations (read by the runtime and exported by ``python -m botfleet.runtime kind``):
    ``Config = MyConfig`` (a pydantic model) makes ``self.config`` the validated model instance
    (and ``on_reconfigure`` receive one); a config it refuses ends the start with
    ``invalid_config`` and refuses a reconfigure with the errors in the ack. Without ``Config``,
    ``self.config`` is the JSON object as given. ``self.raw_config`` is always the JSON object.
    ``secrets = ("api_key",)`` on the class names the secrets the bot needs (a start without
    one ends ``missing_secret``); on the instance, ``self.secrets`` is the dict of values.
    The class docstring is the kind's description.

    Set ``callbacks_enabled = False`` (on the class, or in ``__init__``) to run without
    ever calling the manager back: no events, no pending-command reads, no acks.
    """

    #: The config model (a pydantic BaseModel, or any class with model_validate and
    #: model_json_schema); None: the config is a plain dict.
    Config: ClassVar[Any] = None
    #: The custom commands declared with `@command`, by action (filled per subclass).
    declared_commands: ClassVar[dict[str, CommandSpec]] = {}
    callbacks_enabled: bool = True
    #: The bot's persistent directory (`BOTFLEET_STATE_DIR`, from the bot's `state_key`): kept
    #: across restarts and relaunches with the same key; None without one. Set by the runtime.
    state_dir: Path | None = None

    def __init__(
        self,
        *,
        bot_id: str,
        config: dict[str, Any],
        secrets: dict[str, str],
        logger: logging.Logger,
    ) -> None:
        self.bot_id = bot_id
        self.raw_config: dict[str, Any] = config
        self.config: Any = self.parse_config(config)
        if missing := [n for n in declared_secrets(type(self)) if n not in secrets]:
            errors = [{"path": f"/{n}", "message": "required secret is missing"} for n in missing]
            raise Refused(MISSING_SECRET, errors)
        self.secrets = secrets
        self.log = logger
        self._leave = asyncio.Event()
        self.leave_reason: str | None = None
        self.leave_detail: str | None = None
        # Set by the runtime: sends a `report` callback; None while the bot runs without one.
        self._send_report: Callable[[dict[str, Any]], Awaitable[bool]] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Check the declarations once, when the class is defined, not at the first command."""
        super().__init_subclass__(**kwargs)
        check_config_model(cls)
        declared_secrets(cls)
        cls.declared_commands = collect_commands(cls)

    @classmethod
    def parse_config(cls, config: dict[str, Any]) -> Any:
        """The config as the bot sees it: the `Config` model's instance (raising `Refused`
        with code `invalid_config` and each error's path), or the dict without a model."""
        if cls.Config is None:
            return config
        return validate(cls.Config, config, INVALID_CONFIG)

    async def on_start(self) -> None:
        """Join the meeting or connect; return when running. Raising means the start failed."""

    async def run(self) -> int | None:
        """Do the bot's work. The default idles until a leave is requested."""
        await self.wait_for_leave()
        return None

    async def on_reconfigure(self, config: Any) -> None:
        """Apply a new config (the model instance when `Config` is declared, else the dict).
        Raise to refuse it; the error text goes back in the ack."""

    async def on_command(self, action: str, payload: dict[str, Any]) -> Any:
        """Answer a custom command with a JSON value (its `result`); raise to fail it. The
        default runs the `@command` method declared for `action`."""
        declared = type(self).declared_commands.get(action)
        if declared is None:
            raise UnknownAction(action)
        return await declared.invoke(self, payload)

    async def on_secrets(self, secrets: dict[str, str]) -> None:
        """Apply new secrets (reconnect with a new key); raise to fail the `secrets` command."""

    async def report(self, data: dict[str, Any]) -> bool:
        """Send `data` (a JSON object, at most 16 KiB) as the bot's latest report; True once the
        manager took it. Frequent reports are coalesced by the manager: the latest wins."""
        if not isinstance(data, dict):
            raise TypeError("a report must be a JSON object (a dict)")
        size = json_size(data)
        if size > MAX_REPORT_BYTES:
            raise ValueError(f"a report is at most {MAX_REPORT_BYTES} bytes of JSON, not {size}")
        if self._send_report is None:
            return False
        return await self._send_report(data)

    async def on_leave(self) -> None:
        """Leave gracefully (hang up, flush). Bounded by the runtime's leave grace."""

    def request_leave(self, reason: str = "the bot decided to leave") -> None:
        """Leave on the bot's own initiative; the runtime reports `leaving` with this detail."""
        self._begin_leave(LEAVE_BY_BOT, reason)

    @property
    def leave_requested(self) -> bool:
        return self._leave.is_set()

    async def wait_for_leave(self) -> None:
        """Return once a leave was requested by a command, a signal or the bot itself."""
        await self._leave.wait()

    def _begin_leave(self, reason: str, detail: str | None = None) -> None:
        """Runtime side of a leave request; the first reason wins, repeats change nothing."""
        if self._leave.is_set():
            return
        self.leave_reason, self.leave_detail = reason, detail
        self._leave.set()

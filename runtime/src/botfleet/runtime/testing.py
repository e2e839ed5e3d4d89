"""Drive a bot's hooks in a test, without a manager, Redis or a process of its own.

`BotHarness` runs the bot with the runtime's own `Runner` and `CommandRouter` (the same start,
leave and exit rules, the same config and payload validation, each command id applied once);
only the network is replaced: callbacks and acks are recorded in memory, commands come from the
test instead of Redis. The standard library is enough (plain pytest, `asyncio.run`)::

    import asyncio
    from botfleet.runtime.testing import BotHarness

    def test_greeter() -> None:
        async def scenario() -> None:
            async with BotHarness(GreeterBot, config={"greeting": "hi"}) as harness:
                answer = await harness.command("greet", {"name": "Ada"})
                assert answer.ok and answer.result == {"text": "hi Ada"}
                refused = await harness.reconfigure({"greeting": 3})
                assert refused.error.startswith("invalid_config: /greeting")
                assert await harness.leave() == 0
            assert harness.exit_reason == "left"

        asyncio.run(scenario())

What a test can read: `events` (every callback, as the manager would get it), `reports` (the
`data` of each report), `acks` (the latest answer per command id) and `answers` (every ack, in
order, repeats included), `exit_code` / `exit_reason` / `exit_detail` (from `exited`), and `bot`,
the instance itself. A config or secret set the bot refuses at start does not raise: the harness
ends as the runtime would (`exit_reason` `invalid_config`, `missing_secret`, `start_failed`).
A bot with `callbacks_enabled = False` would send none of these events; the harness records them
anyway. Heartbeats are off unless `heartbeat_s` is given.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botfleet.runtime.bot import LEAVE_SIGTERM, Bot
from botfleet.runtime.env import RuntimeEnv
from botfleet.runtime.loader import load_bot_class
from botfleet.runtime.protocol import (
    ACTION_LEAVE,
    ACTION_RECONFIGURE,
    ACTION_SECRETS,
    EVENT_EXITED,
    EVENT_REPORT,
    EVENT_STARTED,
    CommandMessage,
    command_channel,
)
from botfleet.runtime.runner import RUN_RETURN_S, Runner, create_bot, creation_failure

log = logging.getLogger("botfleet.runtime.testing")


class BotExited(RuntimeError):
    """The bot ended before the answer a test waited for."""


@dataclass(frozen=True)
class Ack:
    """A command's answer, as the runtime sends it to the manager."""

    command_id: str
    ok: bool
    error: str | None = None
    result: Any = None


class RecordingClient:
    """Stands in for `ManagerClient`: records what the runtime sends, serves the secrets and
    pending commands the test set."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.events: list[dict[str, Any]] = []
        self.answers: list[Ack] = []
        self.secrets = dict(secrets)
        self.pending: list[CommandMessage] = []
        self._waiters: list[tuple[Any, asyncio.Future[None]]] = []

    async def send_event(self, event: str, **fields: Any) -> bool:
        self.events.append({"event": event, **{k: v for k, v in fields.items() if v is not None}})
        self._wake()
        return True

    async def pending_commands(self) -> list[CommandMessage]:
        pending, self.pending = self.pending, []
        return pending

    async def ack(
        self, command_id: str, ok: bool, error: str | None = None, result: Any = None
    ) -> bool:
        self.answers.append(Ack(command_id, ok, None if ok else (error or "failed"), result))
        self._wake()
        return True

    async def fetch_secrets(self) -> dict[str, str] | None:
        return dict(self.secrets)

    async def aclose(self) -> None:
        return None

    async def until(self, condition: Any) -> None:
        """Return once `condition()` holds (checked after every event and ack)."""
        while not condition():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append((condition, waiter))
            await waiter

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for _, waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class _HarnessRunner(Runner):
    """The real runner, with commands from a queue instead of Redis and no signal handlers."""

    def __init__(self, env: RuntimeEnv, bot: Bot, client: RecordingClient) -> None:
        super().__init__(env, bot, client)  # type: ignore[arg-type]
        self.inbox: asyncio.Queue[CommandMessage] = asyncio.Queue()

    def _install_signal_handlers(self) -> None:
        """A test signals with `BotHarness.signal()`; the test process's own stay as they are."""

    async def _listen_for_commands(self) -> None:
        await self._apply_pending()  # as on connect: what the test queued before the start
        while True:
            await self.router.handle_command(await self.inbox.get())


class BotHarness:
    """One bot, run in this event loop; `async with` starts it and makes sure it ends.

    `bot` is a Bot subclass or a spec (`module:Class`, a built-in name). `config` and `secrets`
    are what the manager would hand it; `state_dir` its persistent directory; `pending` commands
    it reads on connect. Entering waits (up to `start_timeout_s`) until the bot reported
    `started` or ended; `wait_started=False` returns at once (a test of a slow start).
    Leaving the block asks a still running bot to leave (as SIGTERM does) and waits for it.
    """

    def __init__(
        self,
        bot: type[Bot] | str,
        config: dict[str, Any] | None = None,
        secrets: dict[str, str] | None = None,
        *,
        state_dir: str | Path | None = None,
        pending: list[CommandMessage] | None = None,
        bot_id: str = "test-bot",
        heartbeat_s: float = 24 * 3600.0,
        leave_grace_s: float = 5.0,
        start_timeout_s: float = 10.0,
        wait_started: bool = True,
    ) -> None:
        self.bot_class = load_bot_class(bot) if isinstance(bot, str) else bot
        spec = bot if isinstance(bot, str) else f"{bot.__module__}:{bot.__qualname__}"
        self.env = RuntimeEnv(
            bot_id=bot_id,
            token="test-token",
            callback_url="http://botfleet.invalid",
            redis_url="redis://botfleet.invalid",
            command_channel=command_channel(bot_id),
            bot=spec,
            config=dict(config or {}),
            secrets=dict(secrets or {}),
            heartbeat_s=heartbeat_s,
            leave_grace_s=leave_grace_s,
            state_dir=str(state_dir) if state_dir is not None else None,
        )
        self.client = RecordingClient(self.env.secrets)
        self.client.pending = list(pending or [])
        self.start_timeout_s, self.wait_started = start_timeout_s, wait_started
        self.bot: Bot | None = None
        self._runner: _HarnessRunner | None = None
        self._task: asyncio.Task[int] | None = None
        self._ids = itertools.count(1)
        self._config_version = 1

    # ---- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> BotHarness:
        try:
            self.bot = create_bot(self.bot_class, self.env)
        except Exception as exc:  # as the runtime: reported in `exited`, not raised
            reason, detail = creation_failure(exc)
            await self.client.send_event(EVENT_EXITED, exit_code=1, reason=reason, detail=detail)
            return self
        self._runner = _HarnessRunner(self.env, self.bot, self.client)
        self._task = asyncio.create_task(self._runner.run(), name="bot-harness")
        if self.wait_started:
            started = asyncio.create_task(self.client.until(lambda: self._has(EVENT_STARTED)))
            try:
                await asyncio.wait({started, self._task}, timeout=self.start_timeout_s,
                                   return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            finally:
                started.cancel()
            if not (self._has(EVENT_STARTED) or self._task.done()):
                raise TimeoutError(f"the bot did not start within {self.start_timeout_s}s")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is None or self._task.done():
            return
        self.signal()
        bound = self.env.leave_grace_s + 3 * RUN_RETURN_S
        await asyncio.wait({self._task}, timeout=bound)
        if not self._task.done():
            log.warning("the bot did not end within %ss of its leave; cancelling it", bound)
            self._task.cancel()
            await asyncio.wait({self._task})

    def signal(self, reason: str = LEAVE_SIGTERM) -> None:
        """Ask the bot to leave as a signal does (SIGTERM by default)."""
        if self.bot is not None:
            self.bot._begin_leave(reason)

    async def wait_exit(self, timeout: float = 30.0) -> int:
        """The exit code, once the runtime has reported `exited`."""
        if self._task is not None:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        return self.exit_code if self.exit_code is not None else 1

    # ---- commands ----------------------------------------------------------------------------

    async def command(
        self, action: str, payload: dict[str, Any] | None = None, *, timeout: float = 10.0
    ) -> Ack:
        """A custom command; its answer (the bot's `result`, or `error`)."""
        return await self.deliver(self.message(action, payload=payload or {}), timeout=timeout)

    async def reconfigure(self, config: dict[str, Any], *, timeout: float = 10.0) -> Ack:
        """A new config (the whole of it, as the manager sends after merging a PATCH)."""
        self._config_version += 1
        message = self.message(ACTION_RECONFIGURE, config=config)
        return await self.deliver(message, timeout=timeout)

    async def set_secrets(self, secrets: dict[str, str], *, timeout: float = 10.0) -> Ack:
        """New secrets, as `PUT /bots/{id}/secrets`: the runtime fetches them, then acks."""
        self.client.secrets = dict(secrets)
        return await self.deliver(self.message(ACTION_SECRETS), timeout=timeout)

    async def leave(self, *, timeout: float = 30.0) -> int:
        """The `leave` command; returns the exit code once the bot has ended."""
        await self.deliver(self.message(ACTION_LEAVE), timeout=timeout)
        return await self.wait_exit(timeout)

    def message(self, action: str, **fields: Any) -> CommandMessage:
        """A command as the manager would issue it (a fresh id; reconfigure gets a version)."""
        if action == ACTION_RECONFIGURE:
            fields.setdefault("config_version", self._config_version)
        return CommandMessage(
            id=f"cmd-{next(self._ids)}",
            action=action,
            issued_at=datetime.now(UTC).isoformat(),
            **fields,
        )

    async def deliver(self, message: CommandMessage, *, timeout: float = 10.0) -> Ack:
        """Hand the bot one command (again, to test a repeat) and wait for its next answer."""
        if self._runner is None or self._task is None or self._task.done():
            raise BotExited(f"the bot has ended; {message.action} was not delivered")
        seen = len(self.client.answers)

        def answered() -> bool:
            return any(a.command_id == message.id for a in self.client.answers[seen:])

        self._runner.inbox.put_nowait(message)
        waiting = asyncio.create_task(self.client.until(answered))
        try:
            await asyncio.wait({waiting, self._task}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        finally:
            waiting.cancel()
        for ack in reversed(self.client.answers[seen:]):
            if ack.command_id == message.id:
                return ack
        if self._task.done():
            raise BotExited(f"the bot ended before answering {message.action} ({message.id})")
        raise TimeoutError(f"no answer to {message.action} ({message.id}) within {timeout}s")

    async def next_report(self, *, timeout: float = 10.0) -> dict[str, Any]:
        """The next report the bot sends from now on."""
        count = len(self.reports)
        await asyncio.wait_for(self.client.until(lambda: len(self.reports) > count), timeout)
        return self.reports[count]

    # ---- what the bot sent -------------------------------------------------------------------

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.client.events

    @property
    def reports(self) -> list[dict[str, Any]]:
        return [e["data"] for e in self.client.events if e["event"] == EVENT_REPORT]

    @property
    def answers(self) -> list[Ack]:
        return self.client.answers

    @property
    def acks(self) -> dict[str, Ack]:
        return {ack.command_id: ack for ack in self.client.answers}

    @property
    def exited(self) -> dict[str, Any] | None:
        return next((e for e in self.client.events if e["event"] == EVENT_EXITED), None)

    @property
    def exit_code(self) -> int | None:
        return None if self.exited is None else self.exited.get("exit_code")

    @property
    def exit_reason(self) -> str | None:
        return None if self.exited is None else self.exited.get("reason")

    @property
    def exit_detail(self) -> str | None:
        return None if self.exited is None else self.exited.get("detail")

    def _has(self, event: str) -> bool:
        return any(e["event"] == event for e in self.client.events)

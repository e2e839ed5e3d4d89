"""The runtime's main loop: start the bot, report its lifecycle, apply commands, leave cleanly.

The process exit code is always the `exit_code` reported in the `exited` callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import traceback
from pathlib import Path
from typing import Any

from botfleet.runtime.bot import LEAVE_BY_BOT, LEAVE_SIGINT, LEAVE_SIGTERM, Bot, BotFailed
from botfleet.runtime.client import ManagerClient, SilentClient
from botfleet.runtime.commands import CommandRouter
from botfleet.runtime.declare import Refused, describe_errors
from botfleet.runtime.env import RuntimeConfigError, RuntimeEnv, with_secret_env
from botfleet.runtime.loader import load_bot_class
from botfleet.runtime.protocol import (
    EVENT_EXITED,
    EVENT_HEARTBEAT,
    EVENT_LEAVING,
    EVENT_REPORT,
    EVENT_STARTED,
    CommandMessage,
    ProtocolError,
    describe_error,
    signing_key,
    verify_command,
)
from botfleet.runtime.redis_sub import RedisError, Subscription
from botfleet.runtime.retry import Backoff

log = logging.getLogger("botfleet.runtime")

# How long on_leave may take is not set here: it is `env.leave_grace_s`, derived by the manager
# from its stop grace (BOTFLEET_LEAVE_GRACE_S), so the bot leaves before it would be killed.
RUN_RETURN_S = 5.0  # how long run() may take to return after on_leave, before it is cancelled
REPORT_FLUSH_S = 10.0  # how long earlier events may hold up `exited`
REDIS_POLL_S = 15.0  # also the pubsub health-check period, to notice a silently dead connection
EXIT_CONFIG_ERROR = 2  # no callback possible: the manager sees a non-zero exit without `exited`
LISTENER_STOP_S = 3.0  # how long the command listener may take to stop once the bot has exited


class Runner:
    def __init__(self, env: RuntimeEnv, bot: Bot, client: ManagerClient | SilentClient) -> None:
        self.env, self.bot, self.client = env, bot, client
        self.router = CommandRouter(bot=bot, client=client)
        bot._send_report = self._send_report
        self._heartbeat: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._reports: list[asyncio.Task[bool]] = []  # lifecycle events, sent in order
        # Set once the outcome is decided: the command listener stops reconnecting.
        self._closing = asyncio.Event()

    @functools.cached_property
    def _command_key(self) -> str:
        """Redis messages must carry the manager's HMAC under this key; HTTP ones are
        authenticated by the token itself. Derived at the first message, not at start: hashing
        loads OpenSSL's digests, which a bot that is never sent a command does without."""
        return signing_key(self.env.token)

    async def run(self) -> int:
        """Start, supervise and stop the bot; return the exit code that was reported."""
        self._install_signal_handlers()
        self._listener = asyncio.create_task(self._listen_for_commands(), name="commands")
        try:
            start = asyncio.create_task(self.bot.on_start(), name="on_start")
            if await self._leave_first(start):
                await self._stop(start, grace_s=0)
                return await self._leave()
            if isinstance(exc := start.exception(), BotFailed):
                log.error("on_start failed: %s", exc)
                return await self._exit(1, exc.reason, exc.detail or None)
            if exc is not None:
                log.error("on_start failed: %s", describe_error(exc), exc_info=exc)
                return await self._exit(1, "start_failed", describe_error(exc))
            log.info("bot started")
            self._report(EVENT_STARTED)
            self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
            work = asyncio.create_task(self.bot.run(), name="run")
            if await self._leave_first(work):
                return await self._leave(work)
            return await self._finished(work)
        finally:
            await self._stop_commands()  # done by `_exit` already, unless it never ran

    async def _stop_commands(self) -> None:
        """No command is read or answered from here on: the heartbeat, the custom commands
        being answered and the command listener stop. Called before `exited` is sent: a manager
        may end the bot as soon as it has it, revoking the token and deleting the bot's Redis
        user, and a listener still running would see its connection drop, read the pending
        commands and log the 401."""
        self._closing.set()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self.router.cancel_running()
        listener, self._listener = self._listener, None
        if listener is not None:
            await self._stop_listener(listener)

    async def _stop_listener(self, listener: asyncio.Task[None]) -> None:
        """Cancel the command listener and wait for it, within a bound.

        A cancellation that the Redis client swallows (its connection dropped at that moment)
        must not keep an ending bot alive until it is killed as an orphan. So the listener also
        stops on `_closing`, the cancel is repeated, and the wait is bounded.
        """
        deadline = asyncio.get_running_loop().time() + LISTENER_STOP_S
        while not listener.done():
            listener.cancel()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                log.warning("the command listener did not stop within %ss", LISTENER_STOP_S)
                return
            await asyncio.wait({listener}, timeout=min(0.5, remaining))
        if not listener.cancelled() and (exc := listener.exception()) is not None:
            log.warning("command listener ended with %s", describe_error(exc))

    async def _leave_first(self, task: asyncio.Task[Any]) -> bool:
        """Wait for `task` or a leave request; True if a leave was requested."""
        leave = asyncio.create_task(self.bot.wait_for_leave())
        try:
            await asyncio.wait({task, leave}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            leave.cancel()
        return self.bot.leave_requested

    async def _finished(self, work: asyncio.Task[int | None]) -> int:
        if work.cancelled():
            return await self._exit(1, "crashed", "run() was cancelled")
        if isinstance(exc := work.exception(), BotFailed):
            log.error("the bot failed: %s", exc)  # declared by the bot: no traceback
            return await self._exit(1, exc.reason, exc.detail or None)
        if exc is not None:
            traceback.print_exception(exc)
            return await self._exit(1, "crashed", describe_error(exc))
        code = work.result()
        if code is None:
            code = 0
        if type(code) is not int or not 0 <= code <= 255:
            return await self._exit(1, "bot_error", f"run() returned {code!r}, not an exit code")
        return await self._exit(code, "finished" if code == 0 else "bot_error")

    async def _leave(self, work: asyncio.Task[Any] | None = None) -> int:
        """The graceful path: report `leaving`, run on_leave within a grace, stop run(), exit 0."""
        reason = self.bot.leave_reason or LEAVE_BY_BOT
        log.info("leaving (%s)", reason)
        self._report(EVENT_LEAVING, reason=reason, detail=self.bot.leave_detail)
        failure = None
        try:
            await asyncio.wait_for(self.bot.on_leave(), self.env.leave_grace_s)
        except TimeoutError:
            log.warning("on_leave took longer than %ss; exiting anyway", self.env.leave_grace_s)
        except Exception as exc:
            log.error("on_leave failed: %s", describe_error(exc), exc_info=exc)
            failure = describe_error(exc)
        if work is not None:
            await self._stop(work, grace_s=RUN_RETURN_S)
        if failure is not None:
            return await self._exit(1, "leave_failed", failure)
        return await self._exit(0, "left")

    async def _stop(self, task: asyncio.Task[Any], *, grace_s: float) -> None:
        """Let `task` return within the grace, then cancel it (arq-style)."""
        if not task.done():
            await asyncio.wait({task}, timeout=grace_s)
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=RUN_RETURN_S)
        if not task.done():
            log.warning(
                "%s ignores cancellation; waiting until it stops or is killed", task.get_name()
            )
            await asyncio.wait({task})
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("%s raised while leaving: %s", task.get_name(), describe_error(exc))

    async def _exit(self, code: int, reason: str, detail: str | None = None) -> int:
        if self._heartbeat is not None:
            self._heartbeat.cancel()  # no heartbeat may follow `exited`
        log.info("exiting with code %d (%s)", code, reason)
        if unsent := [t for t in self._reports if not t.done()]:
            # `exited` carries the outcome: earlier events may wait a little, not a full budget.
            await asyncio.wait(unsent, timeout=REPORT_FLUSH_S)
            for task in unsent:
                task.cancel()
        await self._stop_commands()  # no command read or ack may follow `exited` either
        await self._report(EVENT_EXITED, exit_code=code, reason=reason, detail=detail)
        return code

    def _report(self, event: str, **fields: Any) -> asyncio.Task[bool]:
        """Send a lifecycle event after the previous one, without holding up the bot.

        A manager that is down for a while must not delay on_leave or run(); the events
        still arrive in order, and `_exit` flushes them before `exited`.
        """
        previous = self._reports[-1] if self._reports else None

        async def send() -> bool:
            if previous is not None:
                await asyncio.wait({previous})
            return await self.client.send_event(event, **fields)

        task = asyncio.create_task(send(), name=f"report-{event}")
        self._reports.append(task)
        return task

    async def _send_report(self, data: dict[str, Any]) -> bool:
        """A bot's report (`Bot.report`): sent at once, beside the lifecycle events, with a
        short budget; the manager keeps the latest."""
        return await self.client.send_event(EVENT_REPORT, data=data)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.env.heartbeat_s)
            try:
                await self.client.send_event(EVENT_HEARTBEAT)
            except Exception:
                log.exception("heartbeat failed")

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig, reason in ((signal.SIGTERM, LEAVE_SIGTERM), (signal.SIGINT, LEAVE_SIGINT)):
            loop.add_signal_handler(sig, self._on_signal, sig, reason)

    def _on_signal(self, sig: signal.Signals, reason: str) -> None:
        if self.bot.leave_requested:
            log.info("%s received; already leaving", sig.name)
        else:
            log.info("%s received; leaving gracefully", sig.name)
            self.bot._begin_leave(reason)

    async def _listen_for_commands(self) -> None:
        """Follow the command channel for the whole life of the bot, reconnecting with backoff.

        Every reconnect goes through here (the subscriber never reconnects on its own), so each
        one re-reads the pending commands it may have missed.
        """
        backoff = Backoff(base_s=0.5, cap_s=30.0)
        while not self._closing.is_set():
            try:
                await self._follow_channel(backoff)
            except (RedisError, OSError) as exc:
                delay = backoff.next_delay()
                log.warning("command channel down (%s); retry in %.1fs", describe_error(exc), delay)
                # Redis only wakes us up: while it is down, read the commands over HTTP.
                await self._apply_pending()
                await self._pause(delay)
            except Exception:
                log.exception("command listener failed; restarting it")
                await self._pause(backoff.next_delay())

    async def _pause(self, delay_s: float) -> None:
        """Sleep before the next reconnect, or less once the bot is closing."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), delay_s)

    async def _apply_pending(self) -> None:
        """Apply the commands the manager holds for us that we have not acknowledged yet."""
        for command in await self.client.pending_commands():
            await self.router.handle_command(command)

    async def _follow_channel(self, backoff: Backoff) -> None:
        async with Subscription(self.env.redis_url, health_check_s=REDIS_POLL_S) as pubsub:
            # Subscribe before reading pending commands, so nothing published after is missed.
            await pubsub.subscribe(self.env.command_channel)
            log.info("listening for commands on %s", self.env.command_channel)
            backoff.reset()
            await self._apply_pending()
            while not self._closing.is_set():
                message = await pubsub.get_message(timeout=REDIS_POLL_S)
                if message is None or message.get("type") != "message":
                    continue
                command = self._authentic_command(message["data"])
                if command is not None:
                    await self.router.handle_command(command)

    def _authentic_command(self, raw: str | bytes) -> CommandMessage | None:
        """The command in a Redis message, or None (logged once, without the payload) when it is
        malformed or not signed by the manager for this bot and attempt: anyone who can publish
        on the channel could have sent it."""
        try:
            fields = json.loads(raw)
        except (TypeError, ValueError):
            log.warning("ignoring a command message that is not JSON")
            return None
        if not verify_command(fields, self._command_key):
            log.warning("dropping a command message with a missing or wrong signature")
            return None
        try:
            return CommandMessage.from_dict(fields)
        except ProtocolError as exc:
            log.warning("ignoring a malformed command: %s", exc)
            return None


def create_bot(bot_class: type[Bot], env: RuntimeEnv) -> Bot:
    """The bot instance for `env`; raises what its constructor raises (`Refused` for a config
    or secret set it declares otherwise)."""
    bot = bot_class(
        bot_id=env.bot_id,
        config=env.config,
        secrets=env.secrets,
        logger=logging.getLogger(f"bot.{env.bot}"),
    )
    bot.state_dir = Path(env.state_dir) if env.state_dir else None
    return bot


def creation_failure(exc: BaseException) -> tuple[str, str]:
    """The `exited` reason and detail of a bot that could not be created: the declaration's
    own code (`invalid_config`, `missing_secret`) with each error's path, else `start_failed`."""
    if isinstance(exc, Refused):
        return exc.code, describe_errors(exc.errors)
    return "start_failed", describe_error(exc)


def _traceback_of(exc: BaseException) -> BaseException | None:
    """A refused config is the user's input, not a bug: no traceback in the log."""
    return None if isinstance(exc, Refused) else exc


async def _amain(env: RuntimeEnv) -> int:
    def manager() -> ManagerClient:
        return ManagerClient(base_url=env.callback_url, bot_id=env.bot_id, token=env.token)

    try:
        bot = create_bot(load_bot_class(env.bot), env)
    except Exception as exc:
        reason, detail = creation_failure(exc)
        log.error("cannot create bot %r: %s: %s", env.bot, reason, detail,
                  exc_info=_traceback_of(exc))  # fmt: skip
        callbacks = manager()
        try:
            await callbacks.send_event(EVENT_EXITED, exit_code=1, reason=reason, detail=detail)
        finally:
            await callbacks.aclose()
        return 1
    if not bot.callbacks_enabled:
        log.info("callbacks disabled by the bot: the manager will hear nothing")
    client = manager() if bot.callbacks_enabled else SilentClient()
    log.info("starting bot %r as %s", env.bot, env.bot_id)
    try:
        return await Runner(env, bot, client).run()
    finally:
        await client.aclose()


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        env = RuntimeEnv.from_environ(with_secret_env(os.environ))
    except RuntimeConfigError as exc:
        log.error("invalid runtime configuration: %s", exc)
        return EXIT_CONFIG_ERROR
    return asyncio.run(_amain(env))

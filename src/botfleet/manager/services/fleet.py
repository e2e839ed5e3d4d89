"""The fleet: the service that turns API requests into database changes and workload actions.

Database first, side effects second: every method commits what the user asked for before it
touches Redis or the orchestrator, so a crash or an unreachable Redis never loses a request; the
reconciler finishes whatever a side effect could not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from typing import Any

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core import metrics
from botfleet.manager.core.db import transaction
from botfleet.manager.core.errors import Invalid, NotImplementedByBackend, Unavailable
from botfleet.manager.core.models import Bot, Command, utcnow
from botfleet.manager.core.sealing import SecretBox, SecretsUnreadable
from botfleet.manager.core.secrets import BOT_TOKEN_PREFIX, digest, new_secret
from botfleet.manager.core.settings import Settings
from botfleet.manager.lifecycle import TERMINAL, BotStatus, Source
from botfleet.manager.lifecycle.rules import on_launch_failed
from botfleet.manager.messaging.bot_acl import BotRedisUsers, bot_url, close_users_on_end
from botfleet.manager.messaging.command_bus import CommandBus
from botfleet.manager.schemas.api import BotCreate
from botfleet.manager.services import attempts
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services import commands as command_records
from botfleet.manager.services import webhook_endpoints as webhooks
from botfleet.manager.services.audit import actor_for
from botfleet.manager.services.images import allowed_patterns, check_image
from botfleet.manager.services.transitions import transition
from botfleet.manager.services.unit_of_work import after_commit, unit_of_work
from botfleet.orchestrators.base import (
    LABEL_FLEET,
    CapabilityNotSupported,
    LaunchSpec,
    Orchestrator,
    OrchestratorError,
    StateRef,
    Workload,
)
from botfleet.runtime.env import RuntimeEnv
from botfleet.runtime.loader import BUILTIN_BOTS
from botfleet.runtime.protocol import command_channel

log = logging.getLogger(__name__)


class Fleet:
    def __init__(
        self,
        *,
        fleet_id: str,
        sessions: sessionmaker[Session],
        orchestrator: Orchestrator,
        bus: CommandBus,
        settings: Settings,
        box: SecretBox,
        redis_users: BotRedisUsers | None = None,
    ) -> None:
        self.fleet_id = fleet_id
        self.sessions = sessions
        self.orchestrator = orchestrator
        self.bus = bus
        self.settings = settings
        self.box = box
        self.allowed_images = allowed_patterns(settings.allowed_images, orchestrator.runtime_image)
        # Engines' SDKs block, so launches and stops run on these threads, off the event loop.
        self._pool = ThreadPoolExecutor(settings.launch_workers, thread_name_prefix="fleet")
        # Each bot's own Redis user (manager/messaging/bot_acl.py), deleted once its bot's end
        # commits; None: bots get the shared URL.
        self.redis_users = redis_users
        if redis_users is not None:
            close_users_on_end(sessions, redis_users, self._submit)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, fn: Any, *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("background %s%r failed", fn.__name__, args)

        self._pool.submit(run)

    # ---- requests from the API -------------------------------------------------------------

    # Request methods take the caller's session first (a request's one transaction, from
    # `unit_of_work`) and queue their side effects to run after its commit; `stop_bot` and
    # `reconfigure` also run in a unit of work of their own when given none (the reconciler).

    def start_bot(
        self, session: Session, *, user_id: str, data: BotCreate, relaunch_of: Bot | None = None
    ) -> Bot:
        """Record a `requested` bot; once committed, launch it (unless it starts later). A
        relaunch keeps its predecessor's secrets sealed as they are: never opened to copy."""
        self._check_allowed(data.bot)
        check_image(data.image, self.allowed_images)
        if data.state_key is not None:
            self._check_state_supported(StateRef(user_id, data.state_key))
        if relaunch_of is not None:
            sealed = relaunch_of.secrets_sealed
        else:
            sealed = self.box.seal(data.secrets) if data.secrets else None
        bot = bot_records.create_bot(
            session,
            user_id=user_id,
            data=data,
            orchestrator=self.orchestrator.name,
            sealed_secrets=sealed,
            relaunch_of=relaunch_of.id if relaunch_of is not None else None,
        )
        if bot.start_at is None or bot.start_at <= utcnow():
            after_commit(session, partial(self._submit, self.launch, bot.id))
        return bot

    def relaunch_bot(self, session: Session, *, bot_id: str, user_id: str | None) -> Bot:
        """A new bot made from an ended one (`relaunch_of`), through the same path as POST
        /bots (allowed bots and images, dedup, the user's limit), with its webhook override.
        409 `bot_live` while the old bot is live; 404 for an unknown or foreign bot."""
        old = bot_records.get_bot(session, bot_id, user_id=user_id)
        data = bot_records.relaunch_request(old)
        bot = self.start_bot(session, user_id=old.user_id, data=data, relaunch_of=old)
        webhooks.copy_override(session, from_bot_id=old.id, to_bot_id=bot.id, user_id=old.user_id)
        return bot

    @contextmanager
    def _unit(self, session: Session | None) -> Iterator[Session]:
        """The caller's transaction when it has one, else a unit of work of its own."""
        if session is not None:
            yield session
            return
        with unit_of_work(self.sessions) as own:
            yield own

    def purge_state(self, user_id: str, state_key: str) -> None:
        """Delete a state directory (DELETE /bots/{id}?purge_state=1), before the deletion
        commits: a purge the engine refuses deletes nothing at all."""
        try:
            self.orchestrator.purge_state(StateRef(user_id, state_key))
        except CapabilityNotSupported as exc:
            raise NotImplementedByBackend("not_supported", str(exc)) from exc
        except OrchestratorError as exc:
            raise Unavailable("state_purge_failed", f"the state was not deleted: {exc}") from exc

    def _check_state_supported(self, state: StateRef) -> None:
        try:
            self.orchestrator.state_dir(state)
        except CapabilityNotSupported as exc:
            raise Invalid("state_not_supported", str(exc)) from exc

    def _check_allowed(self, bot: str) -> None:
        """Built-in bots, or `module:Class` from a module the operator allowed: users share the
        runtime image, so they must not run just any module in it."""
        if ":" not in bot:
            if bot not in BUILTIN_BOTS:
                known = ", ".join(sorted(BUILTIN_BOTS))
                raise Invalid("unknown_bot", f"no built-in bot {bot!r}; built-in: {known}")
            return
        module = bot.split(":", 1)[0]
        allowed = self.settings.allowed_bot_modules
        if "*" in allowed or any(module == m or module.startswith(m + ".") for m in allowed):
            return
        raise Invalid(
            "bot_not_allowed",
            f"module {module!r} is not allowed here; the operator lists allowed modules in "
            "BOTFLEET_ALLOWED_BOT_MODULES",
        )

    def stop_bot(
        self,
        session: Session | None = None,
        *,
        bot_id: str,
        user_id: str | None,
        source: Source = Source.API,
        reason: str = "stop_requested",
    ) -> Bot:
        """Record the stop; once committed, ask the bot to leave. Works with Redis down: the
        leave is stored, and the workload is signalled through the orchestrator instead."""
        with self._unit(session) as session:
            bot = bot_records.lock_bot(session, bot_id, user_id=user_id)
            leave: Command | None = None
            if bot_records.cancel_or_begin_stop(session, bot, source=source, reason=reason):
                leave = command_records.create_leave(
                    session,
                    bot,
                    ttl_s=self.settings.command_ttl_s,
                    retry_s=self.settings.command_retry_s,
                    actor=actor_for(session, source),
                )
            if leave is not None:
                after_commit(session, partial(self._tell_to_leave, bot, leave))
        return bot

    def _tell_to_leave(self, bot: Bot, leave: Command) -> None:
        """Publish the leave; with Redis down, signal the workload through the engine."""
        if not self.publish(leave) and bot.runtime_ref:
            self._submit(self.terminate, bot.id)

    def reconfigure(
        self,
        session: Session | None = None,
        *,
        bot_id: str,
        user_id: str,
        config: dict[str, Any],
        merge: bool = False,
    ) -> Command:
        """Replace (PUT) or merge into (PATCH, a JSON Merge Patch) the bot's config under its
        row lock, so concurrent changes queue and none is lost; once committed, publish the
        command. The answer is the command as committed."""
        with self._unit(session) as session:
            bot = bot_records.lock_bot(session, bot_id, user_id=user_id)
            command = command_records.create_reconfigure(
                session,
                bot,
                config=config,
                merge=merge,
                ttl_s=self.settings.command_ttl_s,
                retry_s=self.settings.command_retry_s,
            )
            after_commit(session, partial(self.publish, command))
        return command

    def send_command(
        self, session: Session, *, bot_id: str, user_id: str | None, action: str, payload: dict
    ) -> Command:
        """A custom command (the bot's `on_command`), stored under the bot's row lock; once
        committed, published like a reconfigure (acked, re-published, expired the same way)."""
        bot = bot_records.lock_bot(session, bot_id, user_id=user_id)
        command = command_records.create_custom(
            session,
            bot,
            action=action,
            payload=payload,
            ttl_s=self.settings.command_ttl_s,
            retry_s=self.settings.command_retry_s,
        )
        after_commit(session, partial(self.publish, command))
        return command

    def replace_secrets(
        self, session: Session, *, bot_id: str, user_id: str | None, secrets: dict[str, str]
    ) -> Command:
        """Seal a live bot's new secrets and tell it to fetch them (`secrets`, which carries
        none); a relaunch or restart after this starts with the new ones too."""
        bot = bot_records.lock_bot(session, bot_id, user_id=user_id)
        command = command_records.create_secrets(
            session,
            bot,
            sealed=self.box.seal(secrets) if secrets else None,
            ttl_s=self.settings.command_ttl_s,
            retry_s=self.settings.command_retry_s,
        )
        after_commit(session, partial(self.publish, command))
        return command

    # ---- commands ----------------------------------------------------------------------------

    def publish(self, command: Command) -> bool:
        """Wake the bot up over Redis. False when Redis refused; the command stays stored and
        the reconciler publishes it again.

        The message is signed with the token hash of the bot's current attempt (the runtime
        drops anything else); a bot without a token (ended, or not launched yet) has no one to
        wake: False, nothing sent."""
        with self.sessions() as session:
            key = session.scalar(select(Bot.token_hash).where(Bot.id == command.bot_id))
        if key is None:
            return False
        message = command_records.to_message(command)
        try:
            receivers = self.bus.publish(command.bot_id, message, key=key)
        except redis.RedisError as exc:
            metrics.COMMAND_PUBLISH_FAILURES.inc()
            log.warning(
                "could not publish %s to %s: %s",
                command.action,
                command_channel(command.bot_id),
                exc,
            )
            return False
        with transaction(self.sessions) as session:
            # Bot row first, then the command: the same order as an ack, so never a deadlock.
            session.get(Bot, command.bot_id, with_for_update=True)
            row = session.get(Command, command.id, with_for_update=True)
            if row is not None:
                command_records.mark_published(
                    session,
                    row,
                    receivers=receivers,
                    retry_s=self.settings.command_retry_s,
                    now=utcnow(),
                )
        return True

    # ---- workloads ---------------------------------------------------------------------------

    def launch(self, bot_id: str) -> None:
        """Launch a `requested` bot. The status is checked under the row lock right before
        launching, so a stop recorded meanwhile wins and nothing is started."""
        with transaction(self.sessions) as session:
            bot = bot_records.lock_bot(session, bot_id)
            if bot.status != BotStatus.REQUESTED:
                log.info("bot %s is %s, not launching", bot_id, bot.status)
                return
            if bot.start_at is not None and bot.start_at > utcnow():
                return
            if bot.start_at is not None and bot.start_at < utcnow() - timedelta(
                seconds=self.settings.schedule_miss_s
            ):
                transition(
                    session,
                    bot,
                    BotStatus.FAILED,
                    reason="schedule_missed",
                    source=Source.SCHEDULER,
                    detail=f"start_at {bot.start_at.isoformat()} passed more than "
                    f"{self.settings.schedule_miss_s:g}s ago",
                )
                return
            transition(  # the move into starting counts the attempt
                session, bot, BotStatus.STARTING, reason="launching", source=Source.ORCHESTRATOR
            )
            spec = self._prepare_attempt(session, bot)
            token_hash = bot.token_hash
        if spec is not None:
            self._open_redis_user(spec.bot_id, token_hash)
            self._launch_workload(spec)

    def relaunch(self, bot_id: str) -> None:
        """Launch the next attempt of a bot the restart policy sent back to `starting`, once its
        backoff is over. The bot is already `starting`: no transition, a new token."""
        with transaction(self.sessions) as session:
            bot = bot_records.lock_bot(session, bot_id)
            due = bot.next_attempt_at is not None and bot.next_attempt_at <= utcnow()
            if bot.status != BotStatus.STARTING or bot.runtime_ref is not None or not due:
                return
            bot.next_attempt_at = None
            bot.started_at = utcnow()  # the start timeout counts from the real launch
            spec = self._prepare_attempt(session, bot)
            token_hash = bot.token_hash
        if spec is not None:
            self._open_redis_user(spec.bot_id, token_hash)
            self._launch_workload(spec)

    def _prepare_attempt(self, session: Session, bot: Bot) -> LaunchSpec | None:
        """A fresh token and an attempt row for the launch about to happen; None (and the bot
        failed) when its secrets cannot be unsealed with the configured keys."""
        token = new_secret(BOT_TOKEN_PREFIX)
        bot.token_hash = digest(token)
        bot.runtime_ref = None
        attempts.begin_attempt(session, bot)
        try:
            return self.launch_spec(bot, token)
        except SecretsUnreadable as exc:
            transition(
                session,
                bot,
                BotStatus.FAILED,
                reason="secrets_unreadable",
                source=Source.ORCHESTRATOR,
                detail=f"{exc}; see SECURITY.md",
            )
            return None

    def _open_redis_user(self, bot_id: str, token_hash: str | None) -> None:
        """The attempt's Redis user, written before its runtime can connect. Best effort: with
        Redis down the runtime reads commands over HTTP and housekeeping writes it later."""
        if self.redis_users is not None and token_hash:
            self.redis_users.open_for(bot_id, token_hash)

    def launch_spec(self, bot: Bot, token: str) -> LaunchSpec:
        """The runtime's environment (runtime/env.py renders it, public and secret apart),
        and nothing else."""
        settings = self.settings
        state = StateRef(bot.user_id, bot.state_key) if bot.state_key else None
        rendered = RuntimeEnv(
            bot_id=bot.id,
            token=token,
            callback_url=settings.resolved_callback_url(),
            redis_url=self._bot_redis_url(bot.id, token),
            command_channel=command_channel(bot.id),
            bot=bot.bot,
            config=bot.config,
            secrets=self.box.open(bot.secrets_sealed) if bot.secrets_sealed else {},
            heartbeat_s=settings.heartbeat_s,
            leave_grace_s=settings.leave_grace_s,
            state_dir=self.orchestrator.state_dir(state) if state is not None else None,
        ).render()
        return LaunchSpec(
            bot_id=bot.id,
            user_id=bot.user_id,
            attempt=bot.attempt,
            image=bot.image or None,
            env=rendered.env,
            secret_env=rendered.secret_env,
            labels=dict(bot.labels or {}),
            fleet=self.fleet_id,
            state=state,
        )

    def _bot_redis_url(self, bot_id: str, token: str) -> str:
        """The bot's own Redis user and token at the address bots reach; the shared URL only
        when per-bot users are off (BOTFLEET_BOT_REDIS_ACL=false)."""
        base = self.settings.bot_redis_url or self.settings.redis_url or ""
        return bot_url(base, bot_id, token) if self.redis_users is not None else base

    def workloads(self, **labels: str) -> list[Workload]:
        """This fleet's workloads as the engine lists them (never another fleet's)."""
        return self.orchestrator.list_workloads({LABEL_FLEET: self.fleet_id, **labels})

    def _launch_workload(self, spec: LaunchSpec) -> None:
        began = time.monotonic()
        try:
            ref = self.orchestrator.launch(spec)
        except OrchestratorError as exc:
            self._launch_failed(spec, exc.code, str(exc))
            return
        except Exception as exc:  # an SDK bug must not leave the bot stuck in `starting`
            log.exception("launch of bot %s raised", spec.bot_id)
            self._launch_failed(spec, "launch_error", f"{type(exc).__name__}: {exc}")
            return
        metrics.LAUNCH_SECONDS.labels(self.orchestrator.name).observe(time.monotonic() - began)
        with transaction(self.sessions) as session:
            bot = bot_records.lock_bot(session, spec.bot_id)
            attempts.set_attempt_ref(session, bot, spec.attempt, ref)
            if bot.attempt == spec.attempt:
                bot.runtime_ref = ref
            ended = bot.status in TERMINAL
        if ended:  # failed or cancelled while the engine was busy: nothing may keep running
            self.orchestrator.stop(ref, grace_s=self.settings.stop_grace_s)

    def _launch_failed(self, spec: LaunchSpec, code: str, message: str) -> None:
        log.warning("launch of bot %s failed (%s): %s", spec.bot_id, code, message)
        with transaction(self.sessions) as session:
            bot = bot_records.lock_bot(session, spec.bot_id)
            outcome = on_launch_failed(bot, code, message)
            if bot.attempt != spec.attempt or outcome is None:
                return
            # The attempt ends as any other: a policy that lists `start_failed` retries it.
            attempts.end_attempt(session, bot, outcome, source=Source.ORCHESTRATOR)

    def terminate(self, bot_id: str) -> None:
        """Signal the workload to leave (SIGTERM or the engine's equivalent), kill after the
        stop grace. The status follows from the runtime's callback or the reconciler."""
        with self.sessions() as session:
            ref = bot_records.get_bot(session, bot_id, user_id=None).runtime_ref
        if ref:
            self.orchestrator.stop(ref, grace_s=self.settings.stop_grace_s)

"""What users ask of their bots (start, relaunch, stop, reconfigure, a custom command, new
secrets), turned into database changes first and side effects second.

Database first: every method records what was asked in the caller's transaction (a request's
one unit of work, `manager/services/unit_of_work.py`) and queues its side effect (a launch, a
publish, a signal) to run after the commit, so a crash or an unreachable Redis never loses a
request; the reconciler and housekeeping finish whatever a side effect could not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.errors import ErrorCode, Invalid
from botfleet.manager.core.models import Bot, Command, utcnow
from botfleet.manager.core.sealing import SecretBox
from botfleet.manager.core.settings import Settings
from botfleet.manager.lifecycle import BotStatus, Source
from botfleet.manager.schemas.api import BotCreate, RestartPolicy
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services import commands as command_records
from botfleet.manager.services import health_rules, kind_checks, kinds
from botfleet.manager.services import webhook_endpoints as webhooks
from botfleet.manager.services.audit import actor_for
from botfleet.manager.services.bot_resources import StartLimits, chosen_placement
from botfleet.manager.services.command_publisher import CommandPublisher
from botfleet.manager.services.images import allowed_patterns, check_image
from botfleet.manager.services.launcher import Launcher
from botfleet.manager.services.unit_of_work import after_commit, unit_of_work
from botfleet.orchestrators.base import StateRef


class BotRequests:
    """The request side of the fleet: checks and records a request under the bot's row lock,
    then hands the launch or signal to `launcher` and the command to `publisher`."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        settings: Settings,
        box: SecretBox,
        launcher: Launcher,
        publisher: CommandPublisher,
    ) -> None:
        self.sessions = sessions  # for the reconciler's stops, which bring no transaction
        self.settings = settings
        self.box = box  # seals the secrets a request brings
        self.launcher = launcher
        self.publisher = publisher
        self.allowed_images = allowed_patterns(
            settings.allowed_images, launcher.orchestrator.runtime_image
        )
        self.limits = StartLimits(
            max_cpu=settings.max_bot_cpu,
            max_memory_mb=settings.max_bot_memory_mb,
            orchestrator=launcher.orchestrator,
        )

    # Methods take the caller's session first and queue their side effects to run after its
    # commit; `stop_bot` and `reconfigure` also run in a unit of work of their own when given
    # none (the reconciler's stops, tests).

    def start_bot(
        self, session: Session, *, user_id: str, data: BotCreate, relaunch_of: Bot | None = None
    ) -> Bot:
        """Record a `requested` bot; once committed, launch it (unless it starts later, or it
        waits `queued` over a limit: `services/queue.py` admits and launches it). A relaunch
        keeps its predecessor's secrets sealed as they are: never opened to copy.

        A kind's bot is checked against the kind before anything is stored (422 with the path
        of each error): its config, and the secrets it needs; it gets the kind's restart policy
        when it asks for none, and keeps the kind's version (`kind_version`). A relaunch runs
        its predecessor's version, unless the kind is retired (409 `kind_retired`)."""
        kind = self._kind_to_start(session, data.bot, relaunch_of)
        check_image(data.image, self.allowed_images)
        if kind is not None:
            kind_checks.check_config(kind, data.config)
            if relaunch_of is None:
                kind_checks.check_secrets(kind, data.secrets)
            if data.restart is None and kind.restart is not None:
                restart = RestartPolicy.model_validate(kind.restart, strict=False)
                data = data.model_copy(update={"restart": restart})
        self._check_resources_and_placement(data, kind)
        if data.state_key is not None:
            self.launcher.check_state_supported(StateRef(user_id, data.state_key))
        if relaunch_of is not None:
            sealed = relaunch_of.secrets_sealed
        else:
            sealed = self.box.seal(data.secrets) if data.secrets else None
        bot = bot_records.create_bot(
            session,
            user_id=user_id,
            data=data,
            orchestrator=self.launcher.orchestrator.name,
            sealed_secrets=sealed,
            relaunch_of=relaunch_of.id if relaunch_of is not None else None,
        )
        bot.kind_version = kind.version if kind is not None else None
        health_rules.keep_rules(bot, data.health, kind)  # its own, else its kind's
        due = bot.start_at is None or bot.start_at <= utcnow()
        if due and bot.status == BotStatus.REQUESTED:  # a queued bot launches once admitted
            after_commit(session, partial(self.launcher.submit, self.launcher.launch, bot.id))
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

    def _kind_to_start(
        self, session: Session, bot: str, relaunch_of: Bot | None
    ) -> kind_checks.KindDoc | None:
        """The kind version a new bot runs (a relaunch: its predecessor's); None for a raw
        `module:Class`, which only a module the operator allowed may be."""
        if ":" in bot:
            self._check_allowed(bot)
            return None
        latest = kinds.find(session, bot)
        if latest is None:
            known = ", ".join(kinds.live_names(session))
            raise Invalid(ErrorCode.UNKNOWN_BOT, f"no kind {bot!r}; kinds: {known}")
        kinds.refuse_retired(latest)
        if relaunch_of is None:
            return latest
        return kinds.kind_of_bot(session, relaunch_of) or latest

    def check_start(self, session: Session, *, user_id: str, data: BotCreate) -> None:
        """What `start_bot` checks against the kind, images and backend before it stores
        anything, for a body kept to be posted later (a schedule's template): 422 now, not at
        fire time. Limits and duplicates are checked at fire time only."""
        kind = self._kind_to_start(session, data.bot, None)
        check_image(data.image, self.allowed_images)
        if kind is not None:
            kind_checks.check_config(kind, data.config)
            kind_checks.check_secrets(kind, data.secrets)
        self._check_resources_and_placement(data, kind)
        if data.state_key is not None:
            self.launcher.check_state_supported(StateRef(user_id, data.state_key))

    def _check_resources_and_placement(
        self, data: BotCreate, kind: kind_checks.KindDoc | None
    ) -> None:
        """422 for resources over the admin's maxima (the bot's own: a kind's were checked when
        it was registered) or a placement (its own, else its kind's) the backend cannot
        honour."""
        own = data.placement.document() if data.placement is not None else None
        self.limits.check_resources(data.resources.document() if data.resources else None)
        self.limits.check_placement(
            chosen_placement(own, kind.placement if kind is not None else None)
        )

    def _check_allowed(self, bot: str) -> None:
        """`module:Class` from a module the operator allowed: users share the runtime image,
        so they must not run just any module in it."""
        module = bot.split(":", 1)[0]
        allowed = self.settings.allowed_bot_modules
        if "*" in allowed or any(module == m or module.startswith(m + ".") for m in allowed):
            return
        raise Invalid(
            ErrorCode.BOT_NOT_ALLOWED,
            f"module {module!r} is not allowed here; the operator lists allowed modules in "
            "BOTFLEET_ALLOWED_BOT_MODULES",
        )

    @contextmanager
    def _unit(self, session: Session | None) -> Iterator[Session]:
        """The caller's transaction when it has one, else a unit of work of its own."""
        if session is not None:
            yield session
            return
        with unit_of_work(self.sessions) as own:
            yield own

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
        if not self.publisher.publish(leave) and bot.runtime_ref:
            self.launcher.submit(self.launcher.terminate, bot.id)

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
            kind = kinds.kind_of_bot(session, bot)  # the version it runs; 422 rolls back
            if kind is not None:
                kind_checks.check_config(kind, command.config or {})
            after_commit(session, partial(self.publisher.publish, command))
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
        kind = kinds.kind_of_bot(session, bot)
        if kind is not None:
            kind_checks.check_command(kind, action, payload)
        after_commit(session, partial(self.publisher.publish, command))
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
        kind = kinds.kind_of_bot(session, bot)
        if kind is not None:  # after the state check (409 first); a 422 rolls it all back
            kind_checks.check_secrets(kind, secrets)
        after_commit(session, partial(self.publisher.publish, command))
        return command

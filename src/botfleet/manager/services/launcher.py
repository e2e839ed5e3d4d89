"""The launcher: everything the manager asks of the engine about one bot's workload.

Engines' SDKs block, so the launches and signals a request queues run on the launcher's own
thread pool (`submit`), off the event loop and after the request's commit. Each launch is
checked under the bot's row lock right before it happens, so a stop recorded meanwhile wins.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from typing import Any, Final

from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core import metrics
from botfleet.manager.core.db import transaction
from botfleet.manager.core.errors import ErrorCode, Invalid, NotImplementedByBackend, Unavailable
from botfleet.manager.core.models import Bot, utcnow
from botfleet.manager.core.sealing import SecretBox, SecretsUnreadable
from botfleet.manager.core.secrets import BOT_TOKEN_PREFIX, digest, new_secret
from botfleet.manager.core.settings import Settings
from botfleet.manager.lifecycle import TERMINAL, BotStatus, Source
from botfleet.manager.lifecycle.rules import may_relaunch, on_launch_failed
from botfleet.manager.messaging.bot_acl import BotRedisUsers, bot_url
from botfleet.manager.services import attempts, kinds
from botfleet.manager.services import bots as bot_records
from botfleet.manager.services.bot_resources import chosen_placement, merged_resources
from botfleet.manager.services.kind_checks import KindDoc
from botfleet.manager.services.transitions import transition
from botfleet.orchestrators.base import (
    LABEL_BOT_ID,
    LABEL_FLEET,
    CapabilityNotSupported,
    LaunchSpec,
    Orchestrator,
    OrchestratorError,
    StateRef,
    Workload,
)
from botfleet.runtime.env import RuntimeEnv
from botfleet.runtime.protocol import command_channel

log = logging.getLogger(__name__)

#: A bot whose kind's virtualenv could not be built fails with this reason (the build's tail as
#: its detail), before any attempt when it was `requested`.
KIND_ENV_FAILED = "kind_env_failed"
#: Threads that build kinds' virtualenvs, apart from the launch workers they would block.
ENV_BUILDERS = 2


class _Building(enum.Enum):
    BUILDING = "building"


#: `_env_python`'s answer while the env is being built: the bot waits, not launched.
_BUILDING: Final = _Building.BUILDING


class Launcher:
    """Launches, relaunches and signals workloads of this fleet (`fleet_id`) on `orchestrator`,
    each attempt with a fresh token and, when per-bot Redis users are on (`redis_users`), its
    own Redis user; lists the fleet's workloads and deletes states."""

    def __init__(
        self,
        *,
        fleet_id: str,
        sessions: sessionmaker[Session],
        orchestrator: Orchestrator,
        settings: Settings,
        box: SecretBox,
        redis_users: BotRedisUsers | None = None,
    ) -> None:
        self.fleet_id = fleet_id
        self.sessions = sessions
        self.orchestrator = orchestrator
        self.settings = settings
        self.box = box  # opens the bots' sealed secrets into their launch environment
        self.redis_users = redis_users  # None: bots get the shared Redis URL
        self._pool = ThreadPoolExecutor(settings.launch_workers, thread_name_prefix="fleet")
        self._env_pool = ThreadPoolExecutor(ENV_BUILDERS, thread_name_prefix="kind-env")
        #: Envs being built, (kind, version) → the bots waiting for each, with what launches
        #: them once it is ready (`launch` or `relaunch`).
        self._env_waiting: dict[tuple[str, int], dict[str, Callable[[str], None]]] = {}
        self._env_lock = threading.Lock()

    def close(self) -> None:
        # A build is not waited for (pip is bounded, its bots stay `requested` for the next
        # manager's reconciler); the launches are.
        self._env_pool.shutdown(wait=False, cancel_futures=True)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Run `fn(*args)` on the launcher's threads; a failure is logged, never raised.
        Raises RuntimeError once the launcher is closed (the manager is stopping)."""

        def run() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("background %s%r failed", getattr(fn, "__name__", fn), args)

        self._pool.submit(run)

    # ---- launches ----------------------------------------------------------------------------

    def launch(self, bot_id: str) -> None:
        """Launch a `requested` bot. The status is checked under the row lock right before
        launching, so a stop recorded meanwhile wins and nothing is started. A kind whose
        virtualenv is not built yet keeps its bot `requested` while it builds (`_await_env`)."""
        with transaction(self.sessions) as session:
            bot = bot_records.lock_bot(session, bot_id)
            if bot.status != BotStatus.REQUESTED:
                log.info("bot %s is %s, not launching", bot_id, bot.status)
                return
            if bot.start_at is not None and bot.start_at > utcnow():
                return
            miss_s = self.settings.schedule_miss_s
            if (
                bot.start_at is not None
                and bot.start_at < utcnow() - timedelta(seconds=miss_s)
                and bot.queued_at is None  # a bot that waited in the queue missed nothing
            ):
                transition(
                    session,
                    bot,
                    BotStatus.FAILED,
                    reason="schedule_missed",
                    source=Source.SCHEDULER,
                    detail=f"start_at {bot.start_at.isoformat()} passed more than {miss_s:g}s ago",
                )
                return
            kind = kinds.kind_of_bot(session, bot)
            python = self._env_python(kind, bot_id, self.launch)
            if python is _BUILDING:
                return
            transition(  # the move into starting counts the attempt
                session, bot, BotStatus.STARTING, reason="launching", source=Source.ORCHESTRATOR
            )
            spec = self._prepare_attempt(session, bot, kind, python)
            token_hash = bot.token_hash
        if spec is not None:
            self._open_redis_user(spec.bot_id, token_hash)
            self._launch_workload(spec)

    def relaunch(self, bot_id: str) -> None:
        """Launch the next attempt of a bot the restart policy sent back to `starting`, once its
        backoff is over. The bot is already `starting`: no transition, a new token. An env to
        build first leaves `next_attempt_at` as it is: the reconciler asks again meanwhile, as
        it does while an earlier attempt's workload may still run (`rules.may_relaunch`)."""
        try:
            earlier = self.workloads(**{LABEL_BOT_ID: bot_id})
        except OrchestratorError:
            earlier = []  # the launch meets the same engine, and says so
        if not may_relaunch(w.status.is_gone for w in earlier):
            return
        with transaction(self.sessions) as session:
            bot = bot_records.lock_bot(session, bot_id)
            due = bot.next_attempt_at is not None and bot.next_attempt_at <= utcnow()
            if bot.status != BotStatus.STARTING or bot.runtime_ref is not None or not due:
                return
            kind = kinds.kind_of_bot(session, bot)
            python = self._env_python(kind, bot_id, self.relaunch)
            if python is _BUILDING:
                return
            bot.next_attempt_at = None
            bot.started_at = utcnow()  # the start timeout counts from the real launch
            spec = self._prepare_attempt(session, bot, kind, python)
            token_hash = bot.token_hash
        if spec is not None:
            self._open_redis_user(spec.bot_id, token_hash)
            self._launch_workload(spec)

    def _prepare_attempt(
        self, session: Session, bot: Bot, kind: KindDoc | None, python: str | None
    ) -> LaunchSpec | None:
        """A fresh token and an attempt row for the launch about to happen; None (and the bot
        failed) when its secrets cannot be unsealed with the configured keys."""
        token = new_secret(BOT_TOKEN_PREFIX)
        bot.token_hash = digest(token)
        bot.runtime_ref = None
        attempts.begin_attempt(session, bot)
        try:
            spec = self.launch_spec(bot, token, kind=kind)
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
        return spec if python is None else replace(spec, python=python)

    # ---- kinds' environments -----------------------------------------------------------------

    def _env_python(
        self, kind: KindDoc | None, bot_id: str, retry: Callable[[str], None]
    ) -> str | _Building | None:
        """The interpreter of the kind's env when the backend builds one and it is ready; None
        when the bot needs none; `_BUILDING` when it is being built: `retry(bot_id)` follows
        its success. Cheap (under the bot's row lock): a dict, then a stat."""
        if kind is None or not kind.package or not self.orchestrator.builds_kind_envs:
            return None
        key = (kind.name, kind.version)
        with self._env_lock:
            waiting = self._env_waiting.get(key)
            if waiting is not None:
                waiting[bot_id] = retry
                return _BUILDING
            python = self.orchestrator.kind_python(kind.name, kind.version, kind.package)
            if python is not None:
                return python
            self._env_waiting[key] = {bot_id: retry}
        log.info("bot %s waits for the env of kind %s v%s", bot_id, kind.name, kind.version)
        try:
            self._env_pool.submit(self._build_env, kind.name, kind.version, dict(kind.package))
        except RuntimeError:  # closed: the manager is stopping; the next one's reconciler builds
            with self._env_lock:
                self._env_waiting.pop(key, None)
        return _BUILDING

    def _build_env(self, name: str, version: int, package: dict[str, Any]) -> None:
        """Build one env (on its own threads: minutes of pip never hold a launch worker), then
        launch the bots that wait for it, or fail them with the build's last words."""
        failure = None
        began = time.monotonic()
        try:
            self.orchestrator.build_kind_env(name, version, package)
        except Exception as exc:  # an OSError or a bug must not leave the bots waiting
            failure = str(exc)[-4000:] or type(exc).__name__
            log.warning("the env of kind %s v%s failed: %s", name, version, failure)
        else:
            log.info("the env of kind %s v%s is ready (%.1fs)", name, version,
                     time.monotonic() - began)  # fmt: skip
        key = (name, version)
        while True:  # waiters that come while these are failed join them, not a new build
            with self._env_lock:
                waiting = self._env_waiting.pop(key, {})
                if not waiting or failure is None:
                    break
                self._env_waiting[key] = {}
            for bot_id, retry in waiting.items():
                self._env_failed(bot_id, retry, failure)
        for bot_id, retry in waiting.items():
            try:
                self.submit(retry, bot_id)
            except RuntimeError:  # closed: the manager is stopping; the reconciler launches
                return

    def _env_failed(self, bot_id: str, retry: Callable[[str], None], detail: str) -> None:
        """A bot whose env could not be built: `requested` → failed, or its restart attempt
        ended failed (the restart policy may try again); a bot gone elsewhere meanwhile is
        left alone."""
        try:
            with transaction(self.sessions) as session:
                bot = bot_records.lock_bot(session, bot_id)
                if retry == self.launch and bot.status == BotStatus.REQUESTED:
                    transition(session, bot, BotStatus.FAILED, reason=KIND_ENV_FAILED,
                               source=Source.ORCHESTRATOR, detail=detail)  # fmt: skip
                    return
                waits = bot.runtime_ref is None and bot.next_attempt_at is not None
                if retry != self.relaunch or bot.status != BotStatus.STARTING or not waits:
                    return
                bot.next_attempt_at = None
                bot.started_at = utcnow()
                attempts.begin_attempt(session, bot)
                outcome = on_launch_failed(bot, KIND_ENV_FAILED, detail)
                if outcome is not None:
                    attempts.end_attempt(session, bot, outcome, source=Source.ORCHESTRATOR)
        except Exception:
            log.exception("bot %s: recording its env's failure failed", bot_id)

    def _open_redis_user(self, bot_id: str, token_hash: str | None) -> None:
        """The attempt's Redis user, written before its runtime can connect. Best effort: with
        Redis down the runtime reads commands over HTTP and housekeeping writes it later."""
        if self.redis_users is not None and token_hash:
            self.redis_users.open_for(bot_id, token_hash)

    def launch_spec(self, bot: Bot, token: str, *, kind: KindDoc | None = None) -> LaunchSpec:
        """The runtime's environment (runtime/env.py renders it, public and secret apart), and
        what the bot's kind says to run: BOTFLEET_BOT is a Python kind's `module:Class`, an
        `exec` kind's argv replaces the runtime's command, its image is the default; its own
        resources over the kind's, its own placement else the kind's."""
        settings = self.settings
        state = StateRef(bot.user_id, bot.state_key) if bot.state_key else None
        rendered = RuntimeEnv(
            bot_id=bot.id,
            token=token,
            callback_url=settings.resolved_callback_url(),
            redis_url=self._bot_redis_url(bot.id, token),
            command_channel=command_channel(bot.id),
            bot=kind.bot_ref if kind is not None else bot.bot,
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
            image=bot.image or (kind.image if kind is not None else None) or None,
            env=rendered.env,
            secret_env=rendered.secret_env,
            labels=dict(bot.labels or {}),
            fleet=self.fleet_id,
            state=state,
            command=kind.command if kind is not None else None,
            resources=merged_resources(bot.resources, kind.resources if kind else None),
            placement=chosen_placement(bot.placement, kind.placement if kind else None),
        )

    def _bot_redis_url(self, bot_id: str, token: str) -> str:
        """The bot's own Redis user and token at the address bots reach; the shared URL only
        when per-bot users are off (BOTFLEET_BOT_REDIS_ACL=false)."""
        base = self.settings.bot_redis_url or self.settings.redis_url or ""
        return bot_url(base, bot_id, token) if self.redis_users is not None else base

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

    # ---- signals, listings, states -----------------------------------------------------------

    def terminate(self, bot_id: str) -> None:
        """Signal the workload to leave (SIGTERM or the engine's equivalent), kill after the
        stop grace. The status follows from the runtime's callback or the reconciler."""
        with self.sessions() as session:
            ref = bot_records.get_bot(session, bot_id, user_id=None).runtime_ref
        if ref:
            self.orchestrator.stop(ref, grace_s=self.settings.stop_grace_s)

    def workloads(self, **labels: str) -> list[Workload]:
        """This fleet's workloads as the engine lists them (never another fleet's)."""
        return self.orchestrator.list_workloads({LABEL_FLEET: self.fleet_id, **labels})

    def check_state_supported(self, state: StateRef) -> None:
        """422 `state_not_supported` on an engine that keeps no state directories."""
        try:
            self.orchestrator.state_dir(state)
        except CapabilityNotSupported as exc:
            raise Invalid(ErrorCode.STATE_NOT_SUPPORTED, str(exc)) from exc

    def purge_state(self, user_id: str, state_key: str) -> None:
        """Delete a state directory (DELETE /bots/{id}?purge_state=1), before the deletion
        commits: a purge the engine refuses deletes nothing at all."""
        try:
            self.orchestrator.purge_state(StateRef(user_id, state_key))
        except CapabilityNotSupported as exc:
            raise NotImplementedByBackend(ErrorCode.NOT_SUPPORTED, str(exc)) from exc
        except OrchestratorError as exc:
            raise Unavailable(
                ErrorCode.STATE_PURGE_FAILED, f"the state was not deleted: {exc}"
            ) from exc

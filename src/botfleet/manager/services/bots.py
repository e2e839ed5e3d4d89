"""Bot records: create, read, list, and the row lock every status change goes through."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from botfleet.manager.core.errors import Conflict, ErrorCode, Invalid, NotFound
from botfleet.manager.core.models import Bot, BotLabel, BotTransition, User, new_id
from botfleet.manager.lifecycle import LIVE, TERMINAL, BotStatus, Source
from botfleet.manager.lifecycle.rules import on_stop_requested
from botfleet.manager.schemas.api import BotCreate, RestartPolicy, RestartTrigger
from botfleet.manager.schemas.placement import PlacementRequest, Resources
from botfleet.manager.services import bot_listing, queue
from botfleet.manager.services.keyset import PageRequest, read_page
from botfleet.manager.services.transitions import transition

LIVE_VALUES = [s.value for s in LIVE]


def lock_bot(session: Session, bot_id: str, *, user_id: str | None = None) -> Bot:
    """Load the bot with its row locked until the transaction ends (PostgreSQL `FOR UPDATE`;
    SQLite transactions are already exclusive). A foreign bot is reported as not found."""
    return _one_bot(session, bot_id, user_id=user_id, lock=True)


def get_bot(session: Session, bot_id: str, *, user_id: str | None) -> Bot:
    return _one_bot(session, bot_id, user_id=user_id, lock=False)


def _one_bot(session: Session, bot_id: str, *, user_id: str | None, lock: bool) -> Bot:
    query = select(Bot).where(Bot.id == bot_id)
    if user_id is not None:  # another user's bot is "not found", never "forbidden"
        query = query.where(Bot.user_id == user_id)
    bot = session.scalar(query.with_for_update() if lock else query)
    if bot is None:
        raise NotFound(ErrorCode.BOT_NOT_FOUND, f"no bot {bot_id}")
    return bot


def create_bot(
    session: Session,
    *,
    user_id: str,
    data: BotCreate,
    orchestrator: str,
    sealed_secrets: str | None = None,
    relaunch_of: str | None = None,
) -> Bot:
    """Insert a `requested` bot, within the user's limit (`relaunch_of`: the ended bot it
    relaunches). A request without `restart` gets the user's default restart policy.

    The bot is inserted first; then the user's row is locked and the user's live bots counted,
    this one included, and the whole insert rolls back if that is over the limit. Concurrent
    creations for one user queue on that lock, and each count runs after the previous holder
    committed (READ COMMITTED: a fresh snapshot per statement), so it is never stale: no
    check-then-insert race. The lock is taken last so that it is held only for the count and
    the commit, not for the whole request: a burst of one user's POSTs then runs in parallel
    except for that short queue. `FOR NO KEY UPDATE` (PostgreSQL), not `FOR UPDATE`: it still
    excludes every other creator, but not the `FOR KEY SHARE` that inserting a row referencing
    the user takes, so the insert above never waits for, nor deadlocks with, another creator.
    A POST with a `dedup_key` takes the lock first (as every POST once did), so that parallel
    duplicates queue and each is told the live bot's id. A limit of 0 means no bots. Over a
    limit (the user's, or a capacity an admin set), a bot that asks for the queue (`queue`, by
    default the user's `queue_by_default`) is created `queued` instead of refused
    (`services/queue.py`, which also takes the capacities' locks, after the user's; a queued
    bot takes no slot, so one over a limit by the committed counts waits without any lock).
    """
    user = session.get(User, user_id)  # its default restart policy applies below
    if user is None:
        raise NotFound(ErrorCode.USER_NOT_FOUND, f"no user {user_id}")
    if data.dedup_key is not None:  # under the lock, so a racing duplicate is told the bot's id
        _lock_user(session, user_id)
        _refuse_duplicate(session, user_id=user_id, dedup_key=data.dedup_key)
    restart = data.restart
    if restart is None and user.default_restart:
        restart = RestartPolicy.model_validate(user.default_restart, strict=False)
    bot = Bot(
        id=new_id(),
        user_id=user_id,
        status=BotStatus.REQUESTED.value,
        status_reason="created",
        orchestrator=orchestrator,
        name=data.name,
        bot=data.bot,
        image=data.image,
        platform=data.platform,
        native_id=data.native_id,
        config=data.config,
        config_version=1,
        secrets_sealed=sealed_secrets,
        labels=data.labels,
        dedup_key=data.dedup_key,
        start_at=data.start_at,
        max_duration_s=data.max_duration_s,
        restart_max_retries=restart.max_retries if restart else 0,
        restart_backoff_s=restart.backoff_s if restart else 5.0,
        restart_on=restart.on if restart else None,
        state_key=data.state_key,
        relaunch_of=relaunch_of,
        priority=data.priority,
        queue_timeout_s=data.queue_timeout_s,
        resources=(data.resources.document() or None) if data.resources is not None else None,
        placement=data.placement.document() if data.placement is not None else None,
    )
    session.add(bot)
    session.add_all(BotLabel(bot_id=bot.id, key=k, value=v) for k, v in data.labels.items())
    _insert(session)
    wants_queue = user.queue_by_default if data.queue is None else data.queue
    lock_user = partial(_lock_user, session, user_id)
    queue.place(session, bot, limit_now=user.max_concurrent_bots, lock_user=lock_user,
                queue=wants_queue)  # fmt: skip
    return bot


def _insert(session: Session) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        message = str(exc.orig)  # PostgreSQL names the index, SQLite its columns
        if "uq_bots_user_state_live" in message or "bots.state_key" in message:
            raise Conflict(
                ErrorCode.STATE_IN_USE,
                "another live bot of yours holds this state_key; stop it first",
            ) from exc
        if "uq_bots_user_dedup_live" not in message and "bots.dedup_key" not in message:
            raise
        # The partial unique index caught a duplicate that raced past the check.
        raise Conflict(ErrorCode.DUPLICATE_BOT, "a live bot with this dedup_key exists") from exc


def _lock_user(session: Session, user_id: str) -> int:
    """Lock the user's row (`FOR NO KEY UPDATE`: see `create_bot`); its current limit."""
    limit = session.scalar(  # key_share: FOR NO KEY UPDATE
        select(User.max_concurrent_bots).where(User.id == user_id).with_for_update(key_share=True)
    )
    if limit is None:
        raise NotFound(ErrorCode.USER_NOT_FOUND, f"no user {user_id}")
    return limit


def _refuse_duplicate(session: Session, *, user_id: str, dedup_key: str) -> None:
    existing = session.scalar(
        select(Bot.id).where(
            Bot.user_id == user_id, Bot.dedup_key == dedup_key, Bot.status.in_(LIVE_VALUES)
        )
    )
    if existing:
        raise Conflict(
            ErrorCode.DUPLICATE_BOT,
            f"bot {existing} already runs with this dedup_key",
            bot_id=existing,
        )


#: Label filters one listing may give (`?label=` repeated): each is a subquery, and 1,000 of
#: them held a database connection until the pool timed out (503).
MAX_LABEL_FILTERS = 20


def parse_label_filters(raw: Sequence[str]) -> list[tuple[str, str]]:
    if len(raw) > MAX_LABEL_FILTERS:
        raise Invalid(
            ErrorCode.TOO_MANY_LABEL_FILTERS,
            f"at most {MAX_LABEL_FILTERS} label filters; {len(raw)} given",
        )
    pairs = []
    for item in raw:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise Invalid(
                ErrorCode.INVALID_LABEL_FILTER, f"label filter {item!r} must look like key:value"
            )
        pairs.append((key, value))
    return pairs


#: What `id_part` may be: a piece of a UUID (hex digits and dashes), at least 4 long.
ID_PART = re.compile(r"[0-9a-f-]{4,36}")
#: How many of an id's last characters the CLI and the dashboard show (its random part).
SHORT_ID_CHARS = 8


def short_id(bot_id: str) -> str:
    """The id as the CLI and the dashboard show it: its last characters, random (its first ones
    are the time it was made, the same for every bot made in the same minute)."""
    return bot_id[-SHORT_ID_CHARS:]


def list_bots(
    session: Session,
    *,
    user_id: str | None,
    statuses: Sequence[str] = (),
    labels: Sequence[tuple[str, str]] = (),
    id_part: str | None = None,
    page: PageRequest = PageRequest(),
    name_prefix: str | None = None,
    sort: str = bot_listing.DEFAULT_SORT,
) -> tuple[list[Bot], str | None]:
    """A page of bots, newest first (ids are time-ordered), and the cursor of the next page.
    `id_part`: the bots whose id starts or ends with it (a prefix, or the short id that the CLI
    and the dashboard show: `short_id`). `name_prefix` and the other orders: bot_listing.py."""
    unknown = set(statuses) - {s.value for s in BotStatus}
    if unknown:
        raise Invalid(ErrorCode.INVALID_STATUS, f"unknown status {sorted(unknown)[0]!r}")
    query = select(Bot)
    if user_id is not None:
        query = query.where(Bot.user_id == user_id)
    if statuses:
        query = query.where(Bot.status.in_(list(statuses)))
    if id_part is not None:
        part = id_part.lower()
        if not ID_PART.fullmatch(part):
            raise Invalid(ErrorCode.INVALID_ID, "an id, or 4 or more of its hex digits and dashes")
        query = query.where(
            Bot.id.startswith(part, autoescape=True) | Bot.id.endswith(part, autoescape=True)
        )
    for key, value in labels:
        query = query.where(
            select(BotLabel.bot_id)
            .where(BotLabel.bot_id == Bot.id, BotLabel.key == key, BotLabel.value == value)
            .exists()
        )
    if name_prefix:
        query = query.where(bot_listing.name_starts_with(name_prefix))
    if bot_listing.check_sort(sort) not in ("created", "-created"):
        return bot_listing.read_sorted_page(session, query, sort=sort, page=page)
    return read_page(session, query, keys=[Bot.id], page=page, descending=sort == "-created")


def list_transitions(
    session: Session, bot_id: str, *, user_id: str | None = None, page: PageRequest = PageRequest()
) -> tuple[list[BotTransition], str | None]:
    """A page of the bot's history, oldest first; 404 for a bot that is not `user_id`'s (None:
    any)."""
    if user_id is not None:
        get_bot(session, bot_id, user_id=user_id)
    query = select(BotTransition).where(BotTransition.bot_id == bot_id)
    return read_page(session, query, keys=[BotTransition.id], page=page)


def cancel_or_begin_stop(session: Session, bot: Bot, *, source: Source, reason: str) -> bool:
    """Record a stop on a locked bot, as `rules.on_stop_requested` plans it. Returns True when
    the running workload must be told to leave.

    The stop is stored before anything else happens, so a launch in flight sees it.
    """
    plan = on_stop_requested(bot, reason)
    if plan.cancel_restart:
        bot.next_attempt_at = None
    for target, why in plan.moves:
        transition(session, bot, target, reason=why, source=source)
    return plan.tell_workload


def relaunch_request(old: Bot) -> BotCreate:
    """What POST /bots would have been asked to create `old` again as it is now: its kind,
    image, name, platform, native id, latest config, labels, restart policy, dedup and state
    keys, duration limit, resources and placement (secrets travel sealed, apart). Refuses
    (409 `bot_live`) a bot that is still live: one bot per workload."""
    if old.status not in TERMINAL:
        raise Conflict(
            ErrorCode.BOT_LIVE, f"bot {old.id} is {old.status.value}: stop it before relaunching"
        )
    restart = RestartPolicy(
        max_retries=old.restart_max_retries,
        backoff_s=float(old.restart_backoff_s),
        on=cast("list[RestartTrigger]", old.restart_on) if old.restart_on is not None else None,
    )
    return BotCreate.model_construct(  # the stored values were validated when first posted
        bot=old.bot,
        image=old.image,
        name=old.name,
        platform=old.platform,
        native_id=old.native_id,
        config=dict(old.config or {}),
        secrets=None,
        labels=dict(old.labels or {}),
        start_at=None,
        max_duration_s=old.max_duration_s,
        restart=restart,
        dedup_key=old.dedup_key,
        state_key=old.state_key,
        priority=old.priority,  # its place in the queue, should the relaunch wait there
        queue_timeout_s=old.queue_timeout_s,
        health=cast("list[Any]", old.health_rules or []),  # as it had them (`[]`: none)
        resources=Resources.model_validate(old.resources, strict=False) if old.resources else None,
        placement=(
            PlacementRequest.model_validate(old.placement, strict=False)
            if old.placement is not None
            else None
        ),
    )


def state_to_purge(session: Session, bot_id: str, *, user_id: str | None) -> tuple[str, str] | None:
    """The (user id, state key) an ended bot's deletion may purge; None when it has no state.
    409 `bot_live` while the bot is live, 409 `state_in_use` while another live bot of the user
    holds the key (a relaunch, say): its directory must not vanish under it."""
    bot = lock_bot(session, bot_id, user_id=user_id)
    if bot.status not in TERMINAL:
        raise Conflict(ErrorCode.BOT_LIVE, f"bot {bot_id} is {bot.status.value}: stop it first")
    if bot.state_key is None:
        return None
    holder = session.scalar(
        select(Bot.id).where(
            Bot.user_id == bot.user_id,
            Bot.state_key == bot.state_key,
            Bot.status.in_(LIVE_VALUES),
        )
    )
    if holder is not None:
        raise Conflict(
            ErrorCode.STATE_IN_USE,
            f"bot {holder} holds this state_key: stop it first",
            bot_id=holder,
        )
    return bot.user_id, bot.state_key

"""Credentials authenticated from memory: a heartbeat or a user's read needs no query for them.

Every manager process keeps a bounded map: credential digest → what it vouches for (a bot token:
the bot and its status; an API key: the key and its user), filled from the database on a miss.
An entry must never outlive the credential it vouches for, so:

- every commit that changes a bot's status or token, an API key or a user publishes their
  owners (`bot:<id>`, `key:<id>`, `user:<id>`) on the Redis channel `botfleet:credentials:changed`
  (after the commit: `publish_credential_changes`, registered in `manager/after_commit.py`), and
  every process drops the entries of those owners when the message arrives; the committing
  process drops them at once;
- the map is used only while this process' listener is subscribed to that channel. A listener
  that lost Redis may have missed a message: the map is cleared and bypassed (every lookup asks
  the database) until it is subscribed again;
- a fill whose database read raced a change is discarded (a generation counter), and entries
  expire after `BOTFLEET_CREDENTIAL_CACHE_TTL_S` whatever happens.

For bot tokens, what a stale entry could ever do is answer one heartbeat "200 active" where the
database would answer 401: the heartbeat's write itself checks token and status in the database
(`heartbeat_batches.py`), and every callback that changes a bot still locks and reads its row.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

import redis
from cachetools import TTLCache
from prometheus_client import Counter
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from botfleet.manager.core.errors import ErrorCode, Forbidden, Unauthorized
from botfleet.manager.core.models import ApiKey, Bot, User
from botfleet.manager.core.secrets import digest, same
from botfleet.manager.lifecycle import BotStatus

log = logging.getLogger(__name__)

CHANGED_CHANNEL = "botfleet:credentials:changed"
_CHANGED_KEY = "botfleet_credentials_changed"

LOOKUPS = Counter(
    "botfleet_credential_cache_lookups_total",
    "Credential authentications by where the answer came from",
    ["result"],  # hit, miss, bypass (the cache is not in use: its listener is not subscribed)
)


@dataclass(frozen=True)
class KnownBot:
    """A bot token's digest belongs to this bot, which has this status."""

    bot_id: str
    status: BotStatus

    @property
    def owners(self) -> tuple[str, ...]:
        return (f"bot:{self.bot_id}",)


@dataclass(frozen=True)
class KnownKey:
    """An API key's digest belongs to this unrevoked key of this enabled user, with these
    scopes, valid until `expires_at` (None: no expiry; checked on every hit). Revoking the key
    or disabling the user is a commit that drops the entry (`key:<id>`, `user:<id>`)."""

    user_id: str
    key_id: str
    scopes: frozenset[str] = frozenset({"bots:read", "bots:write"})
    expires_at: datetime | None = None

    @property
    def owners(self) -> tuple[str, ...]:
        return (f"key:{self.key_id}", f"user:{self.user_id}")


Known = KnownBot | KnownKey


class CredentialCache:
    """The map and its listener thread (one per manager process)."""

    def __init__(self, redis_url: str, *, max_entries: int, ttl_s: float) -> None:
        self._url = redis_url
        self._entries: TTLCache[str, Known] = TTLCache(maxsize=max_entries, ttl=ttl_s)
        self._digests_of: dict[str, set[str]] = {}  # owner → digests, to drop entries by owner
        self._lock = threading.Lock()
        self._generation = 0
        self._subscribed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="token-cache", daemon=True)

    # ---- reads and fills ---------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self._subscribed

    def get(self, digest: str) -> Known | None:
        if not self._subscribed:
            LOOKUPS.labels("bypass").inc()
            return None
        with self._lock:
            known = self._entries.get(digest)
        LOOKUPS.labels("hit" if known else "miss").inc()
        return known

    def knows(self, digest: str) -> bool:
        """Whether the credential is cached, not counted as a lookup: the rate limiter's
        question before it lets an unknown token reach the database (manager/http/rate_limit.py)."""
        with self._lock:
            return self._subscribed and digest in self._entries

    def generation(self) -> int:
        """Taken before a database read; `put` refuses the read's answer if a change came
        (or the cache was cleared) meanwhile."""
        return self._generation

    def put(self, digest: str, known: Known, *, generation: int) -> None:
        with self._lock:
            if not self._subscribed or generation != self._generation:
                return
            self._entries[digest] = known
            for owner in known.owners:
                self._digests_of.setdefault(owner, set()).add(digest)
            if len(self._digests_of) > 4 * self._entries.maxsize:  # owners of expired entries
                live = set(self._entries.keys())
                self._digests_of = {
                    o: kept for o, ds in self._digests_of.items() if (kept := ds & live)
                }

    def forget(self, owners: set[str]) -> None:
        with self._lock:
            self._generation += 1
            for owner in owners:
                for digest in self._digests_of.pop(owner, ()):
                    self._entries.pop(digest, None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._digests_of.clear()

    # ---- the listener ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._unsubscribed()

    def _unsubscribed(self) -> None:
        self._subscribed = False
        self.clear()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except (redis.RedisError, OSError) as exc:
                log.debug("token cache off (%s): bot tokens are read from the database", exc)
            self._unsubscribed()
            self._stop.wait(1.0)

    def _follow(self) -> None:
        client = redis.Redis.from_url(
            self._url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=5
        )
        try:
            pubsub = client.pubsub()
            pubsub.subscribe(CHANGED_CHANNEL)
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                if message["type"] == "subscribe":  # from now on no change can be missed
                    self.clear()
                    self._subscribed = True
                elif message["type"] == "message":
                    self.forget(set(message["data"].decode().split()))
        finally:
            client.close()


def _owner(obj: object) -> str | None:
    """The cache owner whose entries a change of `obj` makes untrue, if any."""
    if isinstance(obj, Bot):
        attrs = inspect(obj).attrs
        if attrs.status.history.has_changes() or attrs.token_hash.history.has_changes():
            return f"bot:{obj.id}"
    elif isinstance(obj, ApiKey):
        return f"key:{obj.id}"
    elif isinstance(obj, User):
        return f"user:{obj.id}"
    return None


def note_credential_changes(session: Session) -> None:
    """Before-flush listener (`manager/after_commit.py`): note the owners whose entries the
    flushed changes make untrue."""
    for obj in (*session.dirty, *session.deleted):
        if (owner := _owner(obj)) is not None:
            session.info.setdefault(_CHANGED_KEY, set()).add(owner)


def publish_credential_changes(
    session: Session, cache: CredentialCache, client: redis.Redis
) -> None:
    """After-commit listener (`manager/after_commit.py`): drop the changed owners' entries
    from this process' cache and publish them to every other process (best effort: see the
    module docstring)."""
    changed: set[str] | None = session.info.pop(_CHANGED_KEY, None)
    if not changed:
        return
    cache.forget(changed)
    try:
        client.publish(CHANGED_CHANNEL, " ".join(sorted(changed)))
    except redis.RedisError as exc:
        # Other processes' listeners are most likely cut off from the same Redis and have
        # cleared their caches; entries expire after the TTL in any case.
        log.warning("bot changes not published (%s); token caches rely on their TTL", exc)


def drop_credential_changes(session: Session) -> None:
    """After-rollback listener: nothing the rolled-back changes noted was committed."""
    session.info.pop(_CHANGED_KEY, None)


# ---- bot tokens --------------------------------------------------------------------------------


def check_bot_path(owner_id: str, bot_id: str) -> None:
    """A live bot's token on another bot's path is 403 and changes nothing."""
    if owner_id != bot_id:
        raise Forbidden(ErrorCode.FOREIGN_BOT, "a bot's token is valid for its own paths only")


def known_bot_for_digest(session: Session, *, hashed: str) -> KnownBot:
    """The bot a token digest belongs to and its status, for the cache; 401 when it belongs to
    no live bot (a bot's token dies with it)."""
    row = session.execute(
        select(Bot.id, Bot.status, Bot.token_hash).where(Bot.token_hash == hashed)
    ).first()
    if row is None or row.token_hash is None or not same(row.token_hash, hashed):
        raise Unauthorized(
            ErrorCode.INVALID_TOKEN, "this bot token is unknown or its bot has ended"
        )
    return KnownBot(bot_id=row.id, status=row.status)


async def known_bot_for_token(
    sessions: sessionmaker[Session], cache: CredentialCache | None, *, token: str, bot_id: str
) -> tuple[KnownBot, str]:
    """The live bot a token belongs to, and the token's digest, for the callbacks that need no
    row lock (heartbeats, reports): from the cache when it knows the token, else one read on a
    worker thread that fills the cache. 401 for a token of no live bot, 403 on another bot's
    path (as `services.auth.bot_for_token`)."""
    hashed = digest(token)
    known = cache.get(hashed) if cache is not None else None
    if not isinstance(known, KnownBot):  # not cached (or an API key sent as a bot token)
        known = await run_in_threadpool(_read_known_bot, sessions, cache, hashed)
    check_bot_path(known.bot_id, bot_id)
    return known, hashed


def _read_known_bot(
    sessions: sessionmaker[Session], cache: CredentialCache | None, hashed: str
) -> KnownBot:
    generation = cache.generation() if cache is not None else 0
    with sessions() as session:
        known = known_bot_for_digest(session, hashed=hashed)
    if cache is not None:
        cache.put(hashed, known, generation=generation)
    return known

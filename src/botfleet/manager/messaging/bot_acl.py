"""Each bot's own Redis user: it may SUBSCRIBE to its own command channel and PING, nothing else.

Bots run untrusted code, so the URL a bot is handed must not open the whole Redis: with the
manager's credentials a bot could PUBLISH a `leave` on another bot's channel, PSUBSCRIBE every
bot's configs or list every channel. Instead each bot gets a Redis ACL user (Redis ≥ 6.2):

- name `botfleet-bot-<bot id>` (no ':', it goes into a URL's userinfo);
- password: the bot's token. Redis accepts a password by its SHA-256 (`#<hex>`), and that is
  exactly the `token_hash` the manager stores, so the plaintext token is never kept;
- rules: its own channel only, no keys, no command but SUBSCRIBE, UNSUBSCRIBE and PING (AUTH is
  always allowed). redis-py's handshake also sends `CLIENT SETINFO`; the refusal (or, on Redis
  7.0, the unknown subcommand) is ignored by redis-py, so it is not granted.

The user is written right before each launch attempt (each attempt has a new token; `reset`
makes the write idempotent and drops the previous attempt's password) and deleted when the bot
ends (`ACL DELUSER` also disconnects its clients). Redis being down never fails a launch or a
request: the runtime then reads its commands over HTTP, and housekeeping `converge`s the users
once Redis is back (a restarted Redis has forgotten them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from urllib.parse import quote, urlsplit, urlunsplit

import redis
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.models import Bot
from botfleet.manager.lifecycle import TERMINAL, BotStatus
from botfleet.runtime.protocol import command_channel

log = logging.getLogger(__name__)

USER_PREFIX = "botfleet-bot-"
#: Statuses in which a bot holds a token, and so a Redis user.
HOLDS_TOKEN = (BotStatus.STARTING, BotStatus.ACTIVE, BotStatus.STOPPING)
BATCH = 500  # users written or deleted per Redis round trip; ids per database query
_ENDED = "botfleet_bots_ended"


def username(bot_id: str) -> str:
    return USER_PREFIX + bot_id


def acl_rules(bot_id: str, token_hash: str) -> list[str]:
    """The ACL SETUSER rules of a bot's user (after the name)."""
    return [
        "reset",
        "on",
        f"#{token_hash}",
        "resetchannels",
        f"&{command_channel(bot_id)}",
        "resetkeys",
        "-@all",
        "+subscribe",
        "+unsubscribe",
        "+ping",
    ]


def bot_url(base_url: str, bot_id: str, token: str) -> str:
    """`base_url` with its userinfo replaced by the bot's own user and token."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    userinfo = f"{quote(username(bot_id), safe='')}:{quote(token, safe='')}"
    return urlunsplit((parts.scheme, f"{userinfo}@{host}", parts.path, parts.query, ""))


class BotRedisUsers:
    """Writes and deletes bots' ACL users with the manager's own (admin) Redis credentials."""

    def __init__(self, url: str) -> None:
        # Short timeouts: these calls sit on the launch path and after commits.
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=1, socket_timeout=2, decode_responses=True
        )

    def close(self) -> None:
        self._client.close()

    def open_for(self, bot_id: str, token_hash: str) -> bool:
        """Create or replace the bot's user; False (logged) when Redis refused or is down:
        the launch goes on, housekeeping writes the user later."""
        try:
            self.create({bot_id: token_hash})
        except redis.RedisError as exc:
            log.warning("could not write the Redis user of bot %s: %s", bot_id, exc)
            return False
        return True

    def close_for(self, bot_ids: Iterable[str]) -> bool:
        """Delete the users of bots that ended; False (logged) when Redis cannot be asked."""
        try:
            self.delete(bot_ids)
        except redis.RedisError as exc:
            log.warning("could not delete Redis users of ended bots: %s", exc)
            return False
        return True

    def create(self, hashes: dict[str, str]) -> None:
        """`ACL SETUSER` for each bot id → token hash, in batches. Raises redis.RedisError."""
        items = sorted(hashes.items())
        for start in range(0, len(items), BATCH):
            pipe = self._client.pipeline(transaction=False)
            for bot_id, token_hash in items[start : start + BATCH]:
                pipe.execute_command(
                    "ACL", "SETUSER", username(bot_id), *acl_rules(bot_id, token_hash)
                )
            try:
                pipe.execute()
            except redis.ResponseError as exc:
                # Redis quotes a rule it refuses: never let a token hash (the key that signs the
                # bot's commands) reach a log line or /readyz.
                message = str(exc)
                for _, token_hash in items[start : start + BATCH]:
                    message = message.replace(token_hash, "<token hash>")
                raise redis.ResponseError(message) from None

    def delete(self, bot_ids: Iterable[str]) -> None:
        """`ACL DELUSER` (which also disconnects their clients), in batches. Raises."""
        names = sorted({username(b) for b in bot_ids})
        for start in range(0, len(names), BATCH):
            self._client.execute_command("ACL", "DELUSER", *names[start : start + BATCH])

    def existing(self) -> set[str]:
        """The bot ids that have a user, from one `ACL USERS`. Several fleets may share a Redis:
        these are not all ours."""
        return {
            name.removeprefix(USER_PREFIX)
            for name in self._client.execute_command("ACL", "USERS")
            if name.startswith(USER_PREFIX)
        }


def converge(sessions: sessionmaker[Session], users: BotRedisUsers) -> tuple[int, int]:
    """Give every bot that holds a token a user, and delete the users of this database's ended
    bots; return (created, deleted). A user whose bot this database does not know is left
    alone: another fleet may share the Redis. Raises redis.RedisError when Redis is down."""
    existing = users.existing()
    with sessions() as session:
        live = dict(
            session.execute(
                select(Bot.id, Bot.token_hash).where(
                    Bot.status.in_(HOLDS_TOKEN), Bot.token_hash.is_not(None)
                )
            ).all()
        )
        others = sorted(existing - live.keys())
        ended: list[str] = []
        for start in range(0, len(others), BATCH):
            ended += session.scalars(
                select(Bot.id).where(
                    Bot.id.in_(others[start : start + BATCH]), Bot.status.in_(TERMINAL)
                )
            ).all()
    missing = {bot_id: h for bot_id, h in live.items() if bot_id not in existing and h}
    if missing:
        users.create(missing)
        log.info("wrote the Redis users of %d bots that had none", len(missing))
    if ended:
        users.delete(ended)
        log.info("deleted the Redis users of %d ended bots", len(ended))
    return len(missing), len(ended)


def note_ended_bots(session: Session) -> None:
    """After-flush listener (`manager/after_commit.py`): note the bots this flush ended. After
    a flush the session still lists what it flushed, with the attributes' history."""
    for obj in session.dirty:
        if (
            isinstance(obj, Bot)
            and obj.status in TERMINAL
            and inspect(obj).attrs.status.history.has_changes()
        ):
            session.info.setdefault(_ENDED, set()).add(obj.id)


def close_ended_users(session: Session, users: BotRedisUsers, submit: Callable[..., None]) -> None:
    """After-commit listener (`manager/after_commit.py`): delete the users of the bots the
    transaction ended, through `submit`, off the committing thread (Redis may be slow or
    down). Whatever is missed, `converge` deletes."""
    if ended := session.info.pop(_ENDED, None):
        try:
            submit(users.close_for, sorted(ended))
        except RuntimeError:  # the manager is shutting down: `converge` deletes them later
            log.info("not deleting the Redis users of %d ended bots now", len(ended))


def drop_ended_bots(session: Session) -> None:
    """After-rollback listener: the rolled-back transaction ended no bot."""
    session.info.pop(_ENDED, None)

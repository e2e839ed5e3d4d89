"""How much of their limits users use: live bots by status and live keys, for a page of users.

Two grouped reads for the whole page (never one query per user); the live-bot count is the
same one `POST /bots` compares with `max_concurrent_bots` (`manager/services/bots.py`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from botfleet.manager.core.models import ApiKey, Bot, utcnow
from botfleet.manager.lifecycle.states import HOLDS_CAPACITY, LIVE, BotStatus

LIVE_ORDER: tuple[BotStatus, ...] = tuple(s for s in BotStatus if s in LIVE)


@dataclass(frozen=True)
class Usage:
    """A user's live bots by status, and its keys that still sign in."""

    live_by_status: dict[BotStatus, int] = field(default_factory=dict)
    live_keys: int = 0

    @property
    def live(self) -> int:
        """The bots that hold a slot of the limit (queued ones wait for one: not counted)."""
        return sum(n for s, n in self.live_by_status.items() if s in HOLDS_CAPACITY)


def usage_by_user(session: Session, user_ids: Collection[str]) -> dict[str, Usage]:
    """Usage of each of these users (every id gets an entry, zeros included)."""
    if not user_ids:
        return {}
    ids = list(user_ids)
    bots: dict[str, dict[BotStatus, int]] = {uid: {} for uid in ids}
    rows = session.execute(
        select(Bot.user_id, Bot.status, func.count())
        .where(Bot.user_id.in_(ids), Bot.status.in_([s.value for s in LIVE]))
        .group_by(Bot.user_id, Bot.status)
    )
    for user_id, status, count in rows:
        bots[user_id][BotStatus(status)] = int(count)
    now = utcnow()
    keys: dict[str, int] = {
        user_id: count
        for user_id, count in session.execute(
            select(ApiKey.user_id, func.count())
            .where(
                ApiKey.user_id.in_(ids),
                ApiKey.revoked_at.is_(None),
                (ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > now),
            )
            .group_by(ApiKey.user_id)
        )
    }
    return {
        uid: Usage(
            live_by_status={s: bots[uid][s] for s in LIVE_ORDER if bots[uid].get(s)},
            live_keys=int(keys.get(uid, 0)),
        )
        for uid in ids
    }

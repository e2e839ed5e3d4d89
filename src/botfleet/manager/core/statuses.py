"""The bot's status vocabulary: its statuses, who moves them, and the refusal of a move.

It lives in the bottom layer because the tables (`core.models`) and the error handlers
(`core.errors`) need it; which moves are legal and which follows which event is the
lifecycle's business (`botfleet.manager.lifecycle`, which re-exports these names).
"""

from __future__ import annotations

import enum


class BotStatus(enum.StrEnum):
    QUEUED = "queued"  # waits for capacity (the user's limit, an admin's capacity): no slot held
    REQUESTED = "requested"
    STARTING = "starting"
    ACTIVE = "active"
    STOPPING = "stopping"
    COMPLETED = "completed"
    FAILED = "failed"


class Source(enum.StrEnum):
    """Who caused a transition."""

    API = "api"
    RUNTIME = "runtime"
    ORCHESTRATOR = "orchestrator"
    RECONCILER = "reconciler"
    SCHEDULER = "scheduler"


TERMINAL: frozenset[BotStatus] = frozenset({BotStatus.COMPLETED, BotStatus.FAILED})
LIVE: frozenset[BotStatus] = frozenset(BotStatus) - TERMINAL
#: The live bots that take a slot of the user's `max_concurrent_bots` and of every capacity an
#: admin set: all but the queued, which wait for one (a queued bot is still live for dedup and
#: state keys).
HOLDS_CAPACITY: frozenset[BotStatus] = LIVE - {BotStatus.QUEUED}

#: The failures a restart policy retries when it names none (`restart.on`): what every bot's
#: policy retried before `on` existed. A failed start is retried only when asked. Here because
#: the bot row's policy falls back to it (`Bot.restart_on_failures`).
RESTART_ON_DEFAULT: tuple[str, ...] = ("crash", "heartbeat_lost")


class IllegalTransition(Exception):
    """A move the lifecycle's table does not allow; nothing was changed.

    `target` is a status, or an action that needs a live bot (`reconfigure`). The message says
    why in words: the bot has ended, is leaving, or has not started yet. The API answers it
    409 `illegal_transition` (`core.errors`).
    """

    def __init__(self, bot_id: str, current: str, target: str) -> None:
        super().__init__(_refusal(bot_id, current, target))
        self.bot_id, self.current, self.target = bot_id, current, target


#: What a refused action would have done to the bot, for messages.
_PASSIVE = {"reconfigure": "be reconfigured"}


def _refusal(bot_id: str, current: str, target: str) -> str:
    is_status = target in {s.value for s in BotStatus}
    done = (
        "become " + target if is_status else _PASSIVE.get(target, f"receive the {target} command")
    )
    if current in TERMINAL:
        return f"bot {bot_id} has ended ({current}); it can no longer {done}"
    if is_status:
        return f"bot {bot_id} cannot go from {current} to {target}"
    if current == BotStatus.STOPPING:
        return f"bot {bot_id} is stopping; it can no longer {done}"
    if current in (BotStatus.REQUESTED, BotStatus.QUEUED):
        return (
            f"bot {bot_id} has not been launched yet ({current}); it can {done} once it is "
            "starting or active"
        )
    return f"bot {bot_id} is {current}; it can {done} only while starting or active"

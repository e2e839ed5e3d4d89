"""The bot's statuses and the table of legal moves between them.

Pure vocabulary, importing nothing else from the manager, so that `botfleet.manager.core.models` can
type the status column with `BotStatus` without an import cycle. Which move follows which event is
decided
in `botfleet.manager.lifecycle.rules`; `botfleet.manager.services.transitions.transition` is the one
function that applies a move to a row.
"""

from __future__ import annotations

import enum


class BotStatus(enum.StrEnum):
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

#: The failures a restart policy retries when it names none (`restart.on`): what every bot's
#: policy retried before `on` existed. A failed start is retried only when asked.
RESTART_ON_DEFAULT: tuple[str, ...] = ("crash", "heartbeat_lost")

#: Exit reasons a bot declares permanent (`botfleet.runtime.bot.BotFailed`): a relaunch would fail
#: the same way, so no restart policy retries them. `platform_unauthorized`: the platform
#: refused the bot's credentials (a revoked token); only a bot started with new ones helps.
PERMANENT_FAILURE_REASONS: frozenset[str] = frozenset({"platform_unauthorized"})

S = BotStatus
#: (from, to) → the typical cause. Anything not listed is illegal. Every move into `starting`
#: begins a new attempt (`store.transition` counts it).
TRANSITIONS: dict[tuple[BotStatus, BotStatus], str] = {
    (S.REQUESTED, S.STARTING): "the orchestrator launch began",
    (S.REQUESTED, S.COMPLETED): "stopped before launch",
    (S.REQUESTED, S.FAILED): "launch impossible",
    (S.STARTING, S.ACTIVE): "the runtime reported started",
    (S.STARTING, S.STOPPING): "stop requested while starting",
    (S.STARTING, S.FAILED): "launch error, start timeout, exit before started",
    (S.ACTIVE, S.STOPPING): "stop requested, or the bot is leaving",
    (S.ACTIVE, S.COMPLETED): "the bot exited 0 on its own",
    (S.ACTIVE, S.FAILED): "non-zero exit, crash, heartbeat lost, workload vanished",
    (S.ACTIVE, S.STARTING): "restart policy relaunches after a failure",
    (S.STARTING, S.STARTING): "restart policy retries a failed start (restart.on start_failed)",
    (S.STOPPING, S.COMPLETED): "exited after leave, or killed after the stop grace",
    (S.STOPPING, S.FAILED): "exited non-zero while leaving",
}


class IllegalTransition(Exception):
    """A move the table does not allow; nothing was changed.

    `target` is a status, or an action that needs a live bot (`reconfigure`). The message says
    why in words: the bot has ended, is leaving, or has not started yet.
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
    if current == S.STOPPING:
        return f"bot {bot_id} is stopping; it can no longer {done}"
    if current == S.REQUESTED:
        return (
            f"bot {bot_id} has not been launched yet (requested); it can {done} once it is "
            "starting or active"
        )
    return f"bot {bot_id} is {current}; it can {done} only while starting or active"


def is_allowed(current: str, target: str) -> bool:
    return (BotStatus(current), BotStatus(target)) in TRANSITIONS

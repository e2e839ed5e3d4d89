"""The table of legal moves between the bot's statuses.

The vocabulary itself (`BotStatus`, `Source`, `TERMINAL`, `LIVE`, `IllegalTransition`) lives in
`botfleet.manager.core.statuses`, the bottom layer, so that the tables and the error handlers
need nothing above them; it is re-exported here. Which move follows which event is decided in
`botfleet.manager.lifecycle.rules`; `botfleet.manager.services.transitions.transition` is the
one function that applies a move to a row.
"""

from __future__ import annotations

from botfleet.manager.core.statuses import (
    HOLDS_CAPACITY,
    LIVE,
    RESTART_ON_DEFAULT,
    TERMINAL,
    BotStatus,
    IllegalTransition,
    Source,
)

__all__ = [
    "ADMITTED",
    "HOLDS_CAPACITY",
    "LIVE",
    "PERMANENT_FAILURE_REASONS",
    "QUEUE_TIMEOUT",
    "RESTART_ON_DEFAULT",
    "TERMINAL",
    "TRANSITIONS",
    "BotStatus",
    "IllegalTransition",
    "Source",
    "is_allowed",
]

#: Exit reasons a bot declares permanent (`botfleet.runtime.bot.BotFailed`): a relaunch would fail
#: the same way, so no restart policy retries them. `platform_unauthorized`: the platform
#: refused the bot's credentials (a revoked token); only a bot started with new ones helps.
#: `invalid_config`, `missing_secret`: the bot's own declarations refused what it was given.
PERMANENT_FAILURE_REASONS: frozenset[str] = frozenset(
    {"platform_unauthorized", "invalid_config", "missing_secret"}
)

#: Why a queued bot left the queue for `requested`: capacity freed and its turn came.
ADMITTED = "admitted"
#: Why a queued bot failed: it waited its `queue_timeout_s` without being admitted.
QUEUE_TIMEOUT = "queue_timeout"

S = BotStatus
#: (from, to) → the typical cause. Anything not listed is illegal. Every move into `starting`
#: begins a new attempt (`store.transition` counts it).
TRANSITIONS: dict[tuple[BotStatus, BotStatus], str] = {
    (S.QUEUED, S.REQUESTED): "capacity freed; admitted in priority order, then first come",
    (S.QUEUED, S.COMPLETED): "stopped while queued (cancelled)",
    (S.QUEUED, S.FAILED): "`queue_timeout_s` passed (queue_timeout)",
    (S.REQUESTED, S.STARTING): "the orchestrator launch began",
    (S.REQUESTED, S.COMPLETED): "stopped before launch",
    (S.REQUESTED, S.FAILED): "launch impossible",
    (S.STARTING, S.ACTIVE): "the runtime reported started",
    (S.STARTING, S.STOPPING): "stop requested while starting",
    (S.STARTING, S.FAILED): "launch error, start timeout, exit before started",
    (S.ACTIVE, S.STOPPING): "stop requested, or the bot is leaving",
    (S.ACTIVE, S.COMPLETED): "the bot exited 0 on its own",
    (S.ACTIVE, S.FAILED): "non-zero exit, crash, heartbeat lost, workload vanished, node lost "
    "or drained (node_lost, evicted)",
    (S.ACTIVE, S.STARTING): "restart policy relaunches after a failure",
    (S.STARTING, S.STARTING): "restart policy retries a failed start (restart.on start_failed)",
    (S.STOPPING, S.COMPLETED): "exited after leave, or killed after the stop grace",
    (S.STOPPING, S.FAILED): "exited non-zero while leaving, or stopped for silence",
    (S.STOPPING, S.STARTING): "restart policy relaunches a bot whose node was lost or drained "
    "while it left on the engine's signal",
}


def is_allowed(current: str, target: str) -> bool:
    return (BotStatus(current), BotStatus(target)) in TRANSITIONS

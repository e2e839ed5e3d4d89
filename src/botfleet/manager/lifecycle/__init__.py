"""The bot lifecycle, in one package.

- `states`: the table of legal moves (`TRANSITIONS`), and the statuses re-exported from
  `botfleet.manager.core.statuses` (the tables need them, so they live in the bottom layer);
- `rules`: which move follows which event (exit, launch failure, stop, silence, restart policy);
- `store`: `transition()`, the only function that changes a bot's status. Import it from
  `botfleet.manager.services.transitions`: it needs the models and the services.
"""

from botfleet.manager.lifecycle.states import (
    HOLDS_CAPACITY,
    LIVE,
    TERMINAL,
    TRANSITIONS,
    BotStatus,
    IllegalTransition,
    Source,
    is_allowed,
)

__all__ = [
    "HOLDS_CAPACITY",
    "LIVE",
    "TERMINAL",
    "TRANSITIONS",
    "BotStatus",
    "IllegalTransition",
    "Source",
    "is_allowed",
]

"""Whether the bots' listener can take new connections, for the reconciler to read.

A bot whose heartbeats were refused at the door (the callback listener at its connection cap,
because another bot holds the places) is not silent: the manager could not hear it. The
listener records every connection it turns away for lack of room (`turned_away`); the
reconciler asks `saturated_within(heartbeat_s)` before judging silence and, while it answers
True, treats the manager as not listening (as when heartbeats cannot be stored).

One instance per process (`CALLBACK_LISTENER`): the listener runs in the same process as the
reconciler, on another thread. Also here: the descriptor limit the manager runs with.
"""

from __future__ import annotations

import contextlib
import resource
import threading
import time
from typing import Any


class ListenerHealth:
    """Open connections against the cap, and when a connection was last turned away."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # the event loop writes; the reconciler's thread reads
        self.cap: int | None = None  # None: no listener running in this process
        self.open = 0
        self.turned_away_total = 0
        self._last_turned_away: float | None = None  # time.monotonic()

    def configure(self, cap: int) -> None:
        with self._mutex:
            self.cap, self.open = cap, 0

    def opened(self, open_now: int) -> None:
        with self._mutex:
            self.open = open_now

    def turned_away(self, *, now: float | None = None) -> None:
        """A connection was refused because the listener was full."""
        with self._mutex:
            self.turned_away_total += 1
            self._last_turned_away = time.monotonic() if now is None else now

    def saturated_within(self, seconds: float, *, now: float | None = None) -> bool:
        """True while the listener is at its cap, or turned a connection away less than
        `seconds` ago: a heartbeat sent then may have been refused at the door."""
        with self._mutex:
            if self.cap is not None and self.open >= self.cap:
                return True
            if self._last_turned_away is None:
                return False
            moment = time.monotonic() if now is None else now
            return moment - self._last_turned_away < seconds

    def as_dict(self) -> dict[str, Any]:
        with self._mutex:
            return {
                "open": self.open,
                "cap": self.cap,
                "turned_away": self.turned_away_total,
            }


#: The bots' callback listener of this process (`manager/http/listeners.py` feeds it).
CALLBACK_LISTENER = ListenerHealth()


def descriptor_limit() -> int:
    """The process' soft RLIMIT_NOFILE (`botfleet serve` raises it to the hard limit)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (bounded by the kernel's nr_open when the
    hard limit is unlimited); return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open") as nr_open:
                target = int(nr_open.read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        # Refused: kept as it was; the figure said at start is the one in force.
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return descriptor_limit()

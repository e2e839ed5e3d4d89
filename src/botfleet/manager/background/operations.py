"""The bulk operations' worker: a leader-only loop that acts on the bots of running operations
(manager/services/operations.py), a bounded batch at a time.

Paced so that one user's 10,000-bot operation never starves anyone: each batch is its own short
transaction (`BATCH` bots), users take turns batch by batch (round-robin; within one user, the
oldest operation first), and a tick stops starting batches after `TICK_BOTS` bots or
`TICK_SECONDS`; between two batches the database is the requests'. Ticks come every
`INTERVAL_S` (a tick that ran long is followed within that), so a 1,000-bot stop takes a few
seconds, not a thousand API calls.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.services import operations
from botfleet.manager.services.bot_requests import BotRequests
from botfleet.manager.services.launcher import Launcher
from botfleet.manager.services.unit_of_work import unit_of_work

log = logging.getLogger(__name__)

INTERVAL_S = 0.25  # between ticks (an idle one is one indexed read)
BATCH = 50  # bots per transaction
TICK_BOTS = 2000  # bots a tick may act on in all
TICK_SECONDS = 2.0  # no batch starts after this long into a tick
OPERATIONS_SEEN = 500  # running operations read per tick, oldest first


class OperationsWorker:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        bots: BotRequests,
        launcher: Launcher,
        batch: int = BATCH,
        tick_bots: int = TICK_BOTS,
        tick_seconds: float = TICK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions, self.bots, self.launcher = sessions, bots, launcher
        self.batch, self.tick_bots, self.tick_seconds = batch, tick_bots, tick_seconds
        self.clock = clock
        self._last_user: str | None = None  # served last: the next tick starts after it

    def tick(self) -> None:
        """One round-robin pass over the users with running operations, within the budget."""
        with self.sessions() as session:
            running = operations.running_operations(session, limit=OPERATIONS_SEEN)
        operations.OPERATIONS_RUNNING.set(len(running))
        turns = self._turns(running)
        started, spent = self.clock(), 0
        while turns and spent < self.tick_bots and self.clock() - started < self.tick_seconds:
            for user_id in list(turns):
                queue = turns[user_id]
                acted, over = self._one_batch(queue[0], min(self.batch, self.tick_bots - spent))
                spent += acted
                self._last_user = user_id
                if over:
                    queue.popleft()
                    if not queue:
                        del turns[user_id]
                if spent >= self.tick_bots or self.clock() - started >= self.tick_seconds:
                    break

    def _turns(self, running: list[tuple[str, str]]) -> OrderedDict[str, deque[str]]:
        """Each user's running operations, oldest first; users in turn, starting after the one
        served last (so a tick cut short by its budget does not favour the same users)."""
        turns: OrderedDict[str, deque[str]] = OrderedDict()
        for operation_id, user_id in running:
            turns.setdefault(user_id, deque()).append(operation_id)
        users = sorted(turns)
        if self._last_user is not None:
            after = [u for u in users if u > self._last_user]
            users = after + [u for u in users if u <= self._last_user]
        return OrderedDict((u, turns[u]) for u in users)

    def _one_batch(self, operation_id: str, limit: int) -> tuple[int, bool]:
        """One batch of one operation in a transaction of its own (its side effects, the
        publishes and launches, run once it has committed)."""
        with unit_of_work(self.sessions) as session:
            return operations.process_batch(
                session, operation_id, bots=self.bots, launcher=self.launcher, limit=limit
            )

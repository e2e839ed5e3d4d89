"""One write transaction and the side effects that must follow its commit ("database first").

The effects are queued on the session and released by its commit: `release_effects` is one of
the after-commit listeners registered in `manager/after_commit.py`. They then run once the
session is closed, its connection back in the pool (an effect may open sessions of its own).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.db import transaction

log = logging.getLogger(__name__)

_EFFECTS = "botfleet_after_commit"
_COMMITTED = "botfleet_after_commit_released"


def after_commit(session: Session, effect: Callable[[], object]) -> None:
    """Run `effect` once `session`'s unit of work has committed; never if it rolls back.

    A publish or an engine call made before the commit could act on a change that is then
    lost; made after it, a failure only delays what the reconciler finishes anyway.
    """
    effects: list[Callable[[], object]] | None = session.info.get(_EFFECTS)
    if effects is None:
        raise RuntimeError("side effects need a session from unit_of_work()")
    effects.append(effect)


def release_effects(session: Session) -> None:
    """After-commit listener (`manager/after_commit.py`): the queued effects may run."""
    if _EFFECTS in session.info:
        session.info[_COMMITTED] = True


@contextmanager
def unit_of_work(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A write transaction (commit on success, roll back on error), then the side effects that
    were queued with `after_commit`, in order."""
    effects: list[Callable[[], object]] = []
    with transaction(sessions) as session:
        info = session.info
        info[_EFFECTS] = effects
        yield session
    if effects and not info.pop(_COMMITTED, False):
        raise RuntimeError(
            "committed, but its side effects were never released: install the after-commit "
            "listeners on this sessionmaker (manager/after_commit.py)"
        )
    for effect in effects:
        effect()

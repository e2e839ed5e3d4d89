"""One write transaction and the side effects that must follow its commit ("database first")."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.db import transaction

log = logging.getLogger(__name__)

_EFFECTS = "botfleet_after_commit"


def after_commit(session: Session, effect: Callable[[], object]) -> None:
    """Run `effect` once `session`'s unit of work has committed; never if it rolls back.

    A publish or an engine call made before the commit could act on a change that is then
    lost; made after it, a failure only delays what the reconciler finishes anyway.
    """
    effects: list[Callable[[], object]] | None = session.info.get(_EFFECTS)
    if effects is None:
        raise RuntimeError("side effects need a session from unit_of_work()")
    effects.append(effect)


@contextmanager
def unit_of_work(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A write transaction (commit on success, roll back on error), then the side effects that
    were queued with `after_commit`, in order."""
    effects: list[Callable[[], object]] = []
    with transaction(sessions) as session:
        session.info[_EFFECTS] = effects
        yield session
    for effect in effects:
        effect()

"""A bot's recent output: from its engine while the workload exists, else the lines kept when
it was removed."""

from __future__ import annotations

from sqlalchemy.orm import Session

from manager.errors import NotImplementedByBackend, Unavailable
from manager.services.bots import get_bot
from orchestrators.base import (
    CapabilityNotSupported,
    Orchestrator,
    OrchestratorError,
    WorkloadNotFound,
)


def bot_logs(
    session: Session, bot_id: str, *, user_id: str, orchestrator: Orchestrator, tail: int
) -> str:
    """The last `tail` lines; 501 when the backend keeps no logs, 503 when the engine cannot
    be asked and no lines were kept."""
    bot = get_bot(session, bot_id, user_id=user_id)
    if not bot.runtime_ref:
        return ""
    try:
        return orchestrator.logs(bot.runtime_ref, bot_id=bot.id, tail=tail)
    except CapabilityNotSupported as exc:
        raise NotImplementedByBackend(exc.code, str(exc)) from exc
    except OrchestratorError as exc:
        # Removed (or being removed) after it ended: the lines kept before removal.
        session.expire_all()
        kept = get_bot(session, bot_id, user_id=user_id).last_logs
        if kept is None and not isinstance(exc, WorkloadNotFound):
            raise Unavailable(exc.code, str(exc)) from exc
        return "\n".join((kept or "").splitlines()[-tail:])

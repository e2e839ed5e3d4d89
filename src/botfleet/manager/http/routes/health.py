"""Liveness, readiness and metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from botfleet.manager.core.listener_health import CALLBACK_LISTENER, descriptor_limit
from botfleet.manager.http.deps import AppStateDep
from botfleet.orchestrators.base import BackendUnavailable

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])

#: What a failed readiness check says, by the exception it raised. `/readyz` is not
#: authenticated, so it answers these stable codes only; the exception's text (host names,
#: ports, engine messages) goes to the manager's log.
CHECK_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (PoolTimeout, "busy"),
    (DBAPIError, "unreachable"),
    (redis.AuthenticationError, "refused"),  # a ConnectionError too: first
    (redis.ConnectionError, "unreachable"),
    (redis.TimeoutError, "unreachable"),
    (BackendUnavailable, "unreachable"),
)


def check_code(exc: BaseException) -> str:
    """The stable code for a failed check: `busy`, `unreachable`, `refused` or `error`."""
    return next((code for kind, code in CHECK_CODES if isinstance(exc, kind)), "error")


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(state: AppStateDep) -> JSONResponse:
    """Ready when the database, Redis and the orchestrator all answer and no periodic loop is
    failing (`manager/background/loops.py`: several failed runs in a row; its last error is shown).
    Each check answers `ok` or a code (`unreachable`, `busy`, `refused`, `error`), never the error's
    text: that is logged."""
    checks: dict[str, str] = {}

    def check(name: str, probe: Callable[[], object]) -> None:
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = check_code(exc)
            log.warning("readiness: %s is %s: %s: %s", name, checks[name], type(exc).__name__, exc)

    def database() -> None:
        with state.sessions() as session:
            session.execute(text("SELECT 1"))

    check("database", database)
    check("redis", state.bus.ping)
    check("orchestrator", state.orchestrator.check_health)
    loops = [loop.health() for loop in state.loops]
    ready = all(v == "ok" for v in checks.values()) and not any(h.failing for h in loops)
    return JSONResponse(
        {
            "status": "ok" if ready else "unavailable",
            "checks": checks,
            "loops": {h.name: h.as_dict() for h in loops},
            # What fences each bot in (the process backend: cgroups or rlimits, uids).
            "containment": state.orchestrator.containment(),
            # The descriptor limit raised at start, and the bots' listener against its cap.
            "connections": {
                "descriptor_limit": descriptor_limit(),
                "callbacks": CALLBACK_LISTENER.as_dict(),
            },
        },
        status_code=200 if ready else 503,
    )


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

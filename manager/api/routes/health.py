"""Liveness, readiness and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """Ready when the database, Redis and the orchestrator all answer and no periodic loop is
    failing (`manager/loops.py`: several failed runs in a row; its last error is shown)."""
    state = request.app.state
    checks: dict[str, Any] = {}

    def check(name: str, probe: Any) -> None:
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"error: {type(exc).__name__}: {exc}"[:300]

    def database() -> None:
        with state.sessions() as session:
            session.execute(text("SELECT 1"))

    check("database", database)
    check("redis", state.fleet.bus.ping)
    check("orchestrator", state.fleet.orchestrator.check_health)
    loops = [loop.health() for loop in state.loops]
    ready = all(v == "ok" for v in checks.values()) and not any(h.failing for h in loops)
    return JSONResponse(
        {
            "status": "ok" if ready else "unavailable",
            "checks": checks,
            "loops": {h.name: h.as_dict() for h in loops},
        },
        status_code=200 if ready else 503,
    )


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

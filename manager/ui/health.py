"""The dashboard's Fleet-health page: bots by status over the last hour (a server-drawn SVG),
launch and command round-trip percentiles from this manager's histograms, and the periodic
loops' last run. A user sees their own bots; the admin every user's."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from manager.api.deps import SessionDep
from manager.models import utcnow
from manager.services.fleet_health import STATUS_ORDER, fleet_health
from manager.ui.charts import stacked_bars
from manager.ui.session import UiCallerDep
from manager.ui.templating import render

router = APIRouter()


@router.get("/health")
def health_page(request: Request, session: SessionDep, caller: UiCallerDep) -> Response:
    loops = [loop.health() for loop in getattr(request.app.state, "loops", [])]
    health = fleet_health(session, user_id=caller.user_id, loops=loops, now=utcnow())
    return render(
        request,
        "health.html",
        title="Fleet health",
        health=health,
        chart=stacked_bars(health.chart.buckets),
        statuses=[s.value for s in STATUS_ORDER],
    )

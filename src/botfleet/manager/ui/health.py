"""The dashboard's Fleet-health page: bots by status over the last hour (a server-drawn SVG),
launch and command round-trip percentiles from this manager's histograms, and the periodic
loops' last run. A user sees their own bots; the admin every user's."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from botfleet.manager.core.models import utcnow
from botfleet.manager.http.deps import AppStateDep, SessionDep
from botfleet.manager.ui.charts import stacked_bars
from botfleet.manager.ui.health_data import STATUS_ORDER, fleet_health
from botfleet.manager.ui.session import UiCallerDep
from botfleet.manager.ui.templating import render

router = APIRouter()


@router.get("/health")
def health_page(
    request: Request, state: AppStateDep, session: SessionDep, caller: UiCallerDep
) -> Response:
    loops = [loop.health() for loop in state.loops]
    health = fleet_health(session, user_id=caller.user_id, loops=loops, now=utcnow())
    return render(
        request,
        "health.html",
        title="Fleet health",
        health=health,
        chart=stacked_bars(health.chart.buckets),
        statuses=[s.value for s in STATUS_ORDER],
    )

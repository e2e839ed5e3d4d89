"""Figure 6, the reconciler's tick with 10,000 bot records, in-process, against PostgreSQL and
the real process orchestrator (over an empty data folder).

Records are inserted directly: mostly terminal, a few hundred live without a workload reference
(recent enough that no tick repairs them, so all ticks see the same fleet). The floor is the
least a tick must do: read every live record once and list the engine's workloads.
"""

from __future__ import annotations

import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import select

from bench.common import Figure, drop_database, insert_bots, ms, ratio
from manager.bus import CommandBus
from manager.config import Settings
from manager.db import make_engine, make_session_factory, transaction
from manager.housekeeping import Housekeeping
from manager.migrate import upgrade
from manager.models import Bot, utcnow
from manager.reconciler import Reconciler
from manager.sealing import SecretBox
from manager.services.fleet import Fleet
from manager.services.users import create_user
from orchestrators.process import ProcessOrchestrator, ProcessOrchestratorConfig
from tests.support import fresh_database_url

#: status → count; 10,000 in all.
MIX = {"completed": 8200, "failed": 1400, "active": 250, "starting": 75, "stopping": 75}


def _rows(mix: dict[str, int]) -> list[dict[str, Any]]:
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for status, count in mix.items():
        for i in range(count):
            row: dict[str, Any] = {"status": status, "started_at": now}
            if status in ("completed", "failed"):
                row |= {
                    "ended_at": now,
                    "exit_code": 0 if status == "completed" else 1,
                    "status_reason": "exited" if status == "completed" else "crashed",
                    "runtime_ref": f"{100000 + i}-1",
                }
            elif status == "active":
                row |= {"active_at": now, "last_heartbeat_at": now}
            elif status == "stopping":
                row |= {"active_at": now, "stop_requested_at": now}
            rows.append(row)
    return rows


def run(root: Path, redis_url: str, *, ticks: int = 5) -> Figure:
    """Median (and spread) of `ticks` full reconciler passes, and of the floor."""
    url = fresh_database_url(root)
    upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    with transaction(sessions) as session:
        user, _ = create_user(
            session, name=f"bench-{uuid.uuid4().hex[:8]}", max_concurrent_bots=100_000
        )
        user_id = user.id
    insert_bots(url, user_id, _rows(MIX))
    settings = Settings(redis_url=redis_url)  # the defaults: heartbeat 10 s, grace 30 s, ...
    orchestrator = ProcessOrchestrator(ProcessOrchestratorConfig(data_dir=root / "reconciler"))
    bus = CommandBus(redis_url)
    fleet = Fleet(
        fleet_id="bench",
        sessions=sessions,
        orchestrator=orchestrator,
        bus=bus,
        settings=settings,
        box=SecretBox([Fernet.generate_key().decode()]),
    )
    reconciler, housekeeping = Reconciler(fleet), Housekeeping(fleet)

    def tick() -> list[str]:
        """What the leader runs every interval: the reconciler's pass and housekeeping's."""
        return reconciler.run_once() + housekeeping.run_once()

    live = ("requested", "starting", "active", "stopping")

    def floor_pass() -> None:
        with sessions() as session:
            list(session.scalars(select(Bot).where(Bot.status.in_(live))))
        orchestrator.list_workloads()

    errors: list[str] = []
    try:
        tick()  # warm-up
        floor_pass()
        tick_times, floor_times = [], []
        for _ in range(ticks):
            began = time.perf_counter()
            errors = tick()
            tick_times.append(time.perf_counter() - began)
            began = time.perf_counter()
            floor_pass()
            floor_times.append(time.perf_counter() - began)
        with sessions() as session:
            still_live = len(list(session.scalars(select(Bot.id).where(Bot.status.in_(live)))))
    finally:
        fleet.close()
        bus.close()
        orchestrator.close()
        engine.dispose()
        drop_database(url)
    tick, floor = statistics.median(tick_times), statistics.median(floor_times)
    r = ratio(tick, floor)
    live_count = sum(v for k, v in MIX.items() if k in live)
    return Figure(
        key="reconciler_tick",
        title=f"Reconciler tick with {sum(MIX.values()):,} bot records ({live_count} live)",
        label=f"reconciler tick ({sum(MIX.values())} records, {live_count} live)",
        measured=(
            f"median {ms(tick)} over {ticks} ticks (min {ms(min(tick_times))},"
            f" max {ms(max(tick_times))}), errors {len(errors)}"
        ),
        floor_text=f"read the live rows + list the workloads {ms(floor)}",
        ratio_text=f"{r:.1f}x (median)",
        values={
            "records": sum(MIX.values()),
            "mix": MIX,
            "median_s": tick,
            "ticks_s": tick_times,
            "errors": errors,
            "live_after": still_live,
        },
        floor={
            "what": "one SELECT of every live row + one workload listing",
            "median_s": floor,
            "passes_s": floor_times,
        },
        ratio=r,
        ratio_of="median tick / median floor pass",
    )

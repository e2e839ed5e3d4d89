"""Figure 6, the reconciler's tick, in-process against the real process orchestrator (over an
empty data folder), on PostgreSQL (the production database) and on SQLite: one figure per
database, each with two fleets, 10,000 records (400 live) and 100,000 records (2,000 live).

Records are inserted directly: mostly terminal, the rest live without a workload reference
(recent enough that no tick repairs them, so all ticks see the same fleet). A tick is what the
leader runs every interval: the reconciler's pass and housekeeping's chores. The floor is the
least a tick must do: read every live record once (the columns the reconciler judges, through
the live index) and list the engine's workloads. PostgreSQL's statistics are refreshed after
the insert, as autovacuum does within a minute; SQLite has none unless the operator runs
ANALYZE, and is measured without.
"""

from __future__ import annotations

import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from bench.common import Figure, insert_bots, ms, ratio
from botfleet.manager.background.reconciler import SNAPSHOT
from botfleet.manager.core.db import make_engine, make_session_factory, transaction
from botfleet.manager.core.models import LIVE_SQL, Bot, utcnow
from botfleet.manager.core.settings import Settings
from botfleet.manager.migrate import upgrade
from botfleet.manager.services.users import create_user
from botfleet.orchestrators.process import ProcessOrchestrator, ProcessOrchestratorConfig
from tests.fleet_parts import build_fleet
from tests.support import drop_database

#: The fleets measured, status → count: 10,000 records (400 live), 100,000 (2,000 live).
FLEETS: tuple[dict[str, int], ...] = (
    {"completed": 8200, "failed": 1400, "active": 250, "starting": 75, "stopping": 75},
    {"completed": 82000, "failed": 16000, "active": 1250, "starting": 375, "stopping": 375},
)
LIVE = ("requested", "starting", "active", "stopping")
DATABASES = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}


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


def _fresh_url(root: Path, database: str) -> str:
    """A new, empty database of that kind."""
    if database == "sqlite":
        return f"sqlite:///{root / f'reconciler-{uuid.uuid4().hex[:8]}.db'}"
    import psycopg

    from tests.support import PG_ADMIN

    name = f"bf_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}"


def measure(
    root: Path, redis_url: str, database: str, mix: dict[str, int], ticks: int
) -> dict[str, Any]:
    """`ticks` full ticks over one fleet, each followed by a floor pass."""
    root.mkdir(parents=True, exist_ok=True)
    url = _fresh_url(root, database)
    upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    with transaction(sessions) as session:
        user, _ = create_user(
            session, name=f"bench-{uuid.uuid4().hex[:8]}", max_concurrent_bots=1_000_000
        )
        user_id = user.id
    insert_bots(url, user_id, _rows(mix))
    if database == "postgresql":  # as autovacuum does within a minute of such an insert
        with engine.connect() as conn:
            conn.execute(text("ANALYZE bots"))
            conn.commit()
    settings = Settings(redis_url=redis_url)  # the defaults: heartbeat 10 s, grace 30 s, ...
    orchestrator = ProcessOrchestrator(ProcessOrchestratorConfig(data_dir=root / "engine"))
    fleet = build_fleet(sessions, orchestrator, settings, fleet_id="bench")
    reconciler, housekeeping = fleet.reconciler(), fleet.housekeeping()

    def tick() -> list[str]:
        """What the leader runs every interval: the reconciler's pass and housekeeping's."""
        return reconciler.run_once() + housekeeping.run_once()

    def floor_pass() -> None:
        with sessions() as session:
            session.execute(select(*SNAPSHOT).where(text(LIVE_SQL))).all()
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
            still_live = len(list(session.scalars(select(Bot.id).where(Bot.status.in_(LIVE)))))
    finally:
        fleet.close()
        orchestrator.close()
        engine.dispose()
        drop_database(url)
    return {
        "records": sum(mix.values()),
        "live": sum(v for k, v in mix.items() if k in LIVE),
        "mix": mix,
        "median_s": statistics.median(tick_times),
        "ticks_s": tick_times,
        "errors": errors,
        "live_after": still_live,
        "floor_median_s": statistics.median(floor_times),
        "floor_passes_s": floor_times,
    }


def key(database: str) -> str:
    """The figure's key: PostgreSQL's keeps the key earlier runs used."""
    return "reconciler_tick" if database == "postgresql" else f"reconciler_tick_{database}"


def run(root: Path, redis_url: str, *, database: str = "postgresql", ticks: int = 5) -> Figure:
    """Median (and spread) of `ticks` full ticks, and of the floor, for each fleet."""
    fleets = [
        measure(root / f"reconciler-{database}-{i}", redis_url, database, mix, ticks)
        for i, mix in enumerate(FLEETS)
    ]

    def size(f: dict[str, Any]) -> str:
        return f"{f['records']:,} records ({f['live']:,} live)"

    ratios = [ratio(f["median_s"], f["floor_median_s"]) for f in fleets]
    name = DATABASES[database]
    return Figure(
        key=key(database),
        title=f"Reconciler tick, {' / '.join(size(f) for f in fleets)}, {name}",
        label=f"reconciler tick [{database}]",
        measured="; ".join(
            f"{size(f)}: median {ms(f['median_s'])} over {ticks} ticks (min"
            f" {ms(min(f['ticks_s']))}, max {ms(max(f['ticks_s']))}), errors {len(f['errors'])}"
            for f in fleets
        ),
        floor_text="; ".join(
            f"{size(f)}: read the live rows + list the workloads {ms(f['floor_median_s'])}"
            for f in fleets
        ),
        ratio_text="; ".join(f"{r:.1f}x" for r in ratios) + " (median)",
        values={"database": database, "fleets": fleets},
        floor={"what": "one SELECT of the live rows (ix_bots_live) + one workload listing"},
        ratio=ratios[0],
        ratio_of="median tick / median floor pass, the 10,000-record fleet",
    )

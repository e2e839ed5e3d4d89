"""Figure 2, burst: N POSTs at once; the time until all N are `active`, bots per second, errors.

The floor is N bare runtimes (process spawns or `docker run`s) started at once, timed until all
have called back `started`. The manager's bots are left running for the next figures; the
caller stops them (`common.stop_all`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx

from bench.common import (
    TERMINAL,
    CallbackReceiver,
    Figure,
    docker_run_bare,
    list_all,
    ratio,
    remove_floor_containers,
    spawn_bare_runtime,
    stop_processes,
)
from tests.support import Manager

WAIT_POLL_S = 0.25


async def _post_all(url: str, key: str, count: int) -> list[tuple[int, str | None]]:
    """`count` POST /bots sent at once: (status code, bot id or None) each; a transport error
    counts as status 0."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=120) as c:

        async def one() -> tuple[int, str | None]:
            try:
                response = await c.post("/bots", json={"bot": "demo", "config": {}})
            except httpx.HTTPError:
                return 0, None
            return response.status_code, response.json().get("id") if response.is_success else None

        return await asyncio.gather(*(one() for _ in range(count)))


def manager_burst(manager: Manager, count: int) -> tuple[dict[str, float], list[str], httpx.Client]:
    """Fire the burst and wait until every accepted bot is active (or ended)."""
    user, client = manager.new_user(max_bots=count + 10)
    began = time.perf_counter()
    answers = asyncio.run(_post_all(manager.url, user["api_key"], count))
    posted = time.perf_counter() - began
    ids = [bot_id for code, bot_id in answers if code == 201 and bot_id]
    errors = sum(1 for code, _ in answers if code != 201)
    wanted = set(ids)
    failed: set[str] = set()
    deadline = time.monotonic() + 600
    while True:
        bots = {b["id"]: b["status"] for b in list_all(client)}
        active = {b for b in wanted if bots.get(b) == "active"}
        failed = {b for b in wanted if bots.get(b) in TERMINAL}
        if len(active) + len(failed) >= len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(WAIT_POLL_S)
    elapsed = time.perf_counter() - began
    values = {
        "bots": count,
        "all_active_s": elapsed,
        "bots_per_s": len(active) / elapsed,
        "posts_answered_s": posted,
        "errors": errors + len(failed) + len(wanted - active - failed),
        "non_201": errors,
        "failed": len(failed),
    }
    return values, sorted(active), client


def floor_burst(backend: str, count: int, redis_url: str, tmp: Path) -> dict[str, float]:
    """`count` bare runtimes started at once; seconds until all called back `started`."""
    ids = [f"floor-{uuid.uuid4().hex[:12]}" for _ in range(count)]
    with CallbackReceiver() as receiver:
        began = time.perf_counter()
        if backend == "process":
            procs = [
                spawn_bare_runtime(b, receiver.url, redis_url, tmp / "floor-logs") for b in ids
            ]
            try:
                started = receiver.wait_started(ids, timeout=600)
            finally:
                stop_processes(procs)
        else:
            clis = [docker_run_bare(b, receiver.url, redis_url) for b in ids]  # all at once
            try:
                started = receiver.wait_started(ids, timeout=600)
            finally:
                for cli in clis:
                    cli.wait(120)
                remove_floor_containers()
    elapsed = max(started.values()) - began
    return {"bots": count, "all_started_s": elapsed, "bots_per_s": count / elapsed}


def measure(
    manager: Manager, backend: str, redis_url: str, tmp: Path, *, count: int
) -> tuple[Figure, list[str], httpx.Client]:
    """The floor burst first (and stopped), then the manager's; its bots stay running."""
    floor = floor_burst(backend, count, redis_url, tmp)
    values, active, client = manager_burst(manager, count)
    r = ratio(values["all_active_s"], floor["all_started_s"])
    label = "bare python -m bot_runtime" if backend == "process" else "bare docker run"
    figure = Figure(
        key=f"burst_{backend}",
        title=f"Burst of {count} POST /bots at once, {backend} backend",
        label=f"burst [{backend}] ({count} POSTs at once)",
        measured=(
            f"all active in {values['all_active_s']:.1f} s, {values['bots_per_s']:.1f} bots/s,"
            f" errors {values['errors']}"
        ),
        floor_text=(
            f"{count} x {label} {floor['all_started_s']:.1f} s, {floor['bots_per_s']:.1f} bots/s"
        ),
        ratio_text=f"{r:.2f}x (time)",
        values=values,
        floor={"what": f"{count} x {label} at once, until all called back `started`", **floor},
        ratio=r,
        ratio_of="time until all active / floor time until all started",
        notes="errors = non-201 answers + bots that ended instead of becoming active",
    )
    return figure, active, client

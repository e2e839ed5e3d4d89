"""Figure 1, start latency: POST /bots → `active`, one bot at a time, beside its floor.

The floor is the same runtime started without the manager: a bare `python -m botfleet.runtime`
spawn (process backend) or a bare `docker run --rm --network host` of the same image (Docker),
timed to its first `started` callback at a stub receiver. Floor and manager samples alternate,
so both see the same machine noise.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx

from bench.common import (
    TERMINAL,
    CallbackReceiver,
    Figure,
    docker_run_bare,
    latency_stats,
    ms,
    poll_until,
    ratio,
    remove_floor_containers,
    spawn_bare_runtime,
    stop_processes,
)
from tests.support import Manager

POLL_S = 0.01  # how often the client looks at the bot while it starts


def manager_sample(client: httpx.Client) -> tuple[float, float]:
    """(client-observed POST → active, server-recorded created_at → active_at) of one bot,
    stopped and ended again before returning."""
    began = time.perf_counter()
    response = client.post("/bots", json={"bot": "demo", "config": {}})
    response.raise_for_status()
    bot_id = response.json()["id"]
    seen, bot = poll_until(client, bot_id, {"active"} | TERMINAL, interval=POLL_S, timeout=120)
    if bot["status"] != "active":
        raise RuntimeError(f"bot {bot_id} ended before it was active: {bot['status_reason']}")
    server = (
        datetime.fromisoformat(bot["active_at"]) - datetime.fromisoformat(bot["created_at"])
    ).total_seconds()
    client.post(f"/bots/{bot_id}/stop")
    poll_until(client, bot_id, TERMINAL, interval=0.05, timeout=120)
    return seen - began, server


def floor_sample(backend: str, receiver: CallbackReceiver, redis_url: str, logs: Path) -> float:
    """Seconds from the spawn of a bare runtime to its `started` callback (then stopped)."""
    bot_id = f"floor-{uuid.uuid4().hex[:12]}"
    began = time.perf_counter()
    if backend == "process":
        proc = spawn_bare_runtime(bot_id, receiver.url, redis_url, logs)
        try:
            started = receiver.wait_started([bot_id], timeout=60)[bot_id]
        finally:
            stop_processes([proc])
        return started - began
    cli = docker_run_bare(bot_id, receiver.url, redis_url)
    try:
        started = receiver.wait_started([bot_id], timeout=120)[bot_id]
    finally:
        cli.wait(60)
        subprocess.run(
            ["docker", "stop", "-t", "10", f"bf-bench-floor-{bot_id}"],
            capture_output=True,
            check=False,
        )
    return started - began


def measure(
    manager: Manager, backend: str, redis_url: str, tmp: Path, *, count: int = 50
) -> Figure:
    """`count` alternating manager and floor samples; p50/p95 and the p50 ratio."""
    _, client = manager.new_user(max_bots=count + 5)
    observed: list[float] = []
    server: list[float] = []
    floor: list[float] = []
    with client, CallbackReceiver() as receiver:
        try:
            manager_sample(client)  # warm-up: first imports, first connections
            floor_sample(backend, receiver, redis_url, tmp / "floor-logs")
            for i in range(count):
                order = (True, False) if i % 2 == 0 else (False, True)
                for managed in order:
                    if managed:
                        seen, recorded = manager_sample(client)
                        observed.append(seen)
                        server.append(recorded)
                    else:
                        floor.append(floor_sample(backend, receiver, redis_url, tmp / "floor-logs"))
        finally:
            if backend == "docker":
                remove_floor_containers()
    values = latency_stats(observed, 50, 95)
    values["server_p50_s"] = latency_stats(server, 50)["p50_s"]
    floor_stats = latency_stats(floor, 50, 95)
    r = ratio(values["p50_s"], floor_stats["p50_s"])
    label = "bare python -m botfleet.runtime" if backend == "process" else "bare docker run"
    return Figure(
        key=f"start_latency_{backend}",
        title=f"Start latency, {backend} backend (POST /bots → active)",
        label=f"start latency [{backend}] ({count} bots)",
        measured=f"p50 {ms(values['p50_s'])}, p95 {ms(values['p95_s'])}",
        floor_text=f"{label} p50 {ms(floor_stats['p50_s'])}, p95 {ms(floor_stats['p95_s'])}",
        ratio_text=f"{r:.2f}x (p50)",
        values=values,
        floor={"what": f"{label} to its first `started` callback", **floor_stats},
        ratio=r,
        ratio_of="p50 / floor p50",
        samples={"manager": observed, "floor": floor},
        notes="client-observed (GET polled every 10 ms); server_p50_s is created_at → active_at",
    )

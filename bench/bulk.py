"""Figure 14, bulk operations (issue 30): stopping N bots (default 1,000) with one
`POST /bots/actions`, against stopping as many with one `POST /bots/{id}/stop` each.

Measured: the bulk call's answer time, the time until its operation is `done` (every bot
asked; these bots are scheduled far ahead, so a stop ends each at once and "asked" is "ended"),
and another user's `GET /bots/{id}` p99 while the operation runs beside the same user's p99
idle (the worker must not starve anyone). The floor: the same number of single stop calls, one
after another on one connection with the rate limit raised (the fastest a client could go), and
what the default per-key rate limit (BOTFLEET_RATE_LIMIT_PER_S) makes of them (issue 30: 1,000
calls at 20 requests/s, about 50 s).

`python -m bench.bulk [--count N]` runs this figure alone.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import Figure, bench_manager, latency_stats, ms
from botfleet.manager.core.settings import Settings
from tests.support import Manager, RedisServer

KEY = "bulk_stop"
LATER = "2999-01-01T00:00:00Z"
RATE_ENV = {"BOTFLEET_RATE_LIMIT_PER_S": "100000", "BOTFLEET_RATE_LIMIT_BURST": "100000"}


async def _scheduled(url: str, key: str, count: int, label: str) -> list[str]:
    """`count` bots scheduled far ahead (rows, never processes), 32 POSTs at a time."""
    headers = {"Authorization": f"Bearer {key}"}
    body = {"bot": "demo", "config": {}, "start_at": LATER, "labels": {"run": label}}
    gate = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:

        async def one() -> str:
            async with gate:
                answer = await client.post("/bots", json=body)
                answer.raise_for_status()
                return str(answer.json()["id"])

        return list(await asyncio.gather(*(one() for _ in range(count))))


def _polite_reads(client: httpx.Client, bot_id: str, stop: threading.Event) -> list[float]:
    took = []
    while not stop.is_set():
        began = time.perf_counter()
        client.get(f"/bots/{bot_id}")
        took.append(time.perf_counter() - began)
        time.sleep(0.02)
    return took


def bulk_stop(manager: Manager, *, count: int) -> Figure:
    user, client = manager.new_user(max_bots=count * 2 + 10)
    _, polite = manager.new_user()
    polite_bot = polite.post("/bots", json={"bot": "demo", "config": {}, "start_at": LATER})
    polite_id = polite_bot.json()["id"]
    asyncio.run(_scheduled(manager.url, user["api_key"], count, "bulk"))
    single_ids = asyncio.run(_scheduled(manager.url, user["api_key"], count, "single"))

    stop = threading.Event()
    idle: list[float] = []
    reader = threading.Thread(target=lambda: idle.extend(_polite_reads(polite, polite_id, stop)))
    reader.start()
    time.sleep(3)
    stop.set()
    reader.join()

    during: list[float] = []
    stop = threading.Event()
    reader = threading.Thread(target=lambda: during.extend(_polite_reads(polite, polite_id, stop)))
    reader.start()
    began = time.perf_counter()
    answer = client.post(
        "/bots/actions", json={"action": "stop", "selector": {"labels": {"run": "bulk"}}}
    )
    answered = time.perf_counter() - began
    operation = answer.json()
    while operation["status"] == "running":
        time.sleep(0.05)
        operation = client.get(f"/operations/{operation['id']}").json()
    done_s = time.perf_counter() - began
    stop.set()
    reader.join()
    listed = client.get("/bots", params={"label": "run:bulk", "status": "completed", "limit": 1000})
    ended = len(listed.json()["items"])

    began = time.perf_counter()
    for bot_id in single_ids:
        client.post(f"/bots/{bot_id}/stop").raise_for_status()
    singles_s = time.perf_counter() - began
    rate = Settings().rate_limit_per_s
    rate_bound_s = count / rate if rate > 0 else 0.0

    idle_stats, during_stats = latency_stats(idle, 50, 99), latency_stats(during, 50, 99)
    values: dict[str, Any] = {
        "bots": count,
        "bulk_answer_s": answered,
        "bulk_done_s": done_s,
        "bulk_bots_per_s": count / done_s,
        "operation": {k: operation[k] for k in ("status", "total", "done", "failed")},
        "ended_bots_listed": ended,
        "single_calls_s": singles_s,
        "default_rate_bound_s": rate_bound_s,
        "polite_get_idle": idle_stats,
        "polite_get_during": during_stats,
    }
    ratio = done_s / singles_s
    return Figure(
        key=KEY,
        title=f"Stopping {count} bots: one bulk operation against {count} single calls",
        label=f"bulk stop [{count} bots]",
        measured=(
            f"answered in {ms(answered)}, done in {done_s:.1f} s ({count / done_s:.0f} bots/s);"
            f" another user's GET p99 {ms(during_stats['p99_s'])} during it"
            f" ({ms(idle_stats['p99_s'])} idle)"
        ),
        floor_text=(
            f"{count} single stops back to back {singles_s:.1f} s (rate limit raised);"
            f" at the default {rate:g} requests/s {rate_bound_s:.0f} s"
        ),
        ratio_text=f"{ratio:.2f}x (bulk / single calls back to back)",
        values=values,
        floor={"single_calls_s": singles_s, "default_rate_bound_s": rate_bound_s},
        ratio=ratio,
        ratio_of="bulk operation's time to done / the single calls' time",
        samples={"polite_idle": idle, "polite_during": during},
        notes="bots scheduled far ahead: a stop ends each at once (no workload to wait for);"
        " the per-key rate limit is raised for this figure so the single calls are not paced",
    )


def run(tmp: Path, redis_url: str, *, count: int = 1000) -> Figure:
    """The figure on a manager of its own (PostgreSQL, process backend, default intervals)."""
    with bench_manager(tmp / f"bulk-{uuid.uuid4().hex[:6]}", redis_url, extra=RATE_ENV) as m:
        return bulk_stop(m, count=count)


def main() -> None:
    """This figure alone: `python -m bench.bulk --count 1000`."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="botfleet-bulk-") as name:
        tmp = Path(name)
        redis_server = RedisServer(tmp / "redis")
        redis_server.start()
        try:
            figure = run(tmp, redis_server.url, count=args.count)
        finally:
            redis_server.stop()
    print(figure.summary)
    print(figure.values)


if __name__ == "__main__":
    main()

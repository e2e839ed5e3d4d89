"""Figure 12, the queue and the timers (issue 30).

Queue: a burst of N POST /bots with `queue: true` (default 1,000) against a user limit of L
(default 20) whose slots are all held (by L bots scheduled an hour ahead), sent as fast as C
connections allow (default 8: a client's burst; with 1,000 in flight at once every path waits
its turn for the manager's two cores). Measured: each POST's latency (p50/p99; the target: p99
under 200 ms), beside the answer the queue replaces (500 POSTs over the limit without it: 429)
at the same concurrency. Then the slots are released and the queue drains: every bot runs the
demo bot and finishes at once (`finish_after_s: 0`); the drain runs from the release until
every bot has ended. Its floor is the engine's own pace: the time the same bots held their
slots (admission to end), summed and divided by L, as if no slot ever stood idle; the ratio is
the queue's overhead. Also: the gap between a slot freeing and the next admission (the timers
loop's interval bounds it), and 200 more queued POSTs sent while the drain's bots start on the
same two cores.

The manager's per-key rate limit is raised for this figure (the burst would otherwise be paced
by `rate_limited` answers, which is the rate limiter's figure, not the queue's).

Timers: bots whose `start_at` comes, whose `max_duration_s` runs out, and whose restart backoff
ends, with the default intervals (timers every 0.5 s, the reconciler every 5 s): how late each
fired after its time, read from the bots' transitions (floor: the 1 s bound of issue 30).

`python -m bench.queue [--count N] [--limit L]` runs this figure alone.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from bench.common import Figure, bench_manager, latency_stats, ms, pct
from tests.support import Manager, RedisServer

KEY = "queue_burst"
TIMERS_KEY = "timer_lateness"
POST_P99_FLOOR_S = 0.2
TIMER_BOUND_S = 1.0
RATE_ENV = {"BOTFLEET_RATE_LIMIT_PER_S": "100000", "BOTFLEET_RATE_LIMIT_BURST": "100000"}


async def _post_all(
    url: str, key: str, count: int, connections: int, *, queue: bool = True
) -> list[tuple[int, float]]:
    """`count` POSTs (with the queue, or not), `connections` at a time: (status, seconds)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"bot": "demo", "config": {"finish_after_s": 0}, "queue": queue}
    gate = asyncio.Semaphore(connections)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=120) as c:

        async def one() -> tuple[int, float]:
            async with gate:
                began = time.perf_counter()
                try:
                    answer = await c.post("/bots", json=body)
                except httpx.TransportError:
                    return 0, time.perf_counter() - began
                return answer.status_code, time.perf_counter() - began

        return await asyncio.gather(*(one() for _ in range(count)))


def _rows(database_url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def _wait_ended(database_url: str, user_id: str, count: int, timeout: float) -> None:
    engine = create_engine(database_url)
    query = text(
        "SELECT count(*) FROM bots WHERE user_id = :u AND status IN ('completed', 'failed')"
    )
    deadline = time.monotonic() + timeout
    try:
        with engine.connect() as conn:
            while conn.execute(query, {"u": user_id}).scalar_one() < count:
                conn.rollback()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the queue did not drain within {timeout:g}s")
                time.sleep(0.5)
    finally:
        engine.dispose()


def _hold_slots(manager: Manager, key: str, limit: int) -> list[str]:
    """`limit` bots scheduled an hour ahead: they hold every slot and run nothing yet."""
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=manager.url, headers=headers, timeout=60) as client:
        body = {"bot": "demo", "config": {}, "start_at": later}
        return [client.post("/bots", json=body).json()["id"] for _ in range(limit)]


def _release(manager: Manager, key: str, bot_ids: list[str]) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=manager.url, headers=headers, timeout=60) as client:
        for bot_id in bot_ids:
            client.post(f"/bots/{bot_id}/stop")


def queue_burst(manager: Manager, *, count: int, limit: int, connections: int) -> Figure:
    """The 429 path first (its floor), then the burst while every slot is held (the POST path
    alone), then the slots released and the drain, with a second burst of 200 queued POSTs
    sent while the drain's bots start on the same cores."""
    refused_user, client = manager.new_user(max_bots=0)
    client.close()
    refused = asyncio.run(
        _post_all(manager.url, refused_user["api_key"], 500, connections, queue=False)
    )
    floor = latency_stats([took for code, took in refused if code == 429], 50, 99)
    user, client = manager.new_user(max_bots=limit)
    client.close()
    holders = _hold_slots(manager, user["api_key"], limit)
    began = time.perf_counter()
    answers = asyncio.run(_post_all(manager.url, user["api_key"], count, connections))
    posted = time.perf_counter() - began
    released = datetime.now(UTC)
    _release(manager, user["api_key"], holders)
    busy = asyncio.run(_post_all(manager.url, refused_user["api_key"], 200, connections))
    _wait_ended(manager.database_url, user["id"], count + limit, timeout=3600)
    bots = _rows(
        manager.database_url,
        "SELECT b.id, b.created_at, b.ended_at, b.status, "
        "(SELECT min(t.at) FROM bot_transitions t WHERE t.bot_id = b.id AND t.to_status = "
        "'requested') AS admitted FROM bots b WHERE b.user_id = :u AND b.attempt > 0",
        u=user["id"],
    )
    ends = sorted(row.ended_at for row in bots)
    drain_s = (ends[-1] - released).total_seconds()
    held = sum((row.ended_at - row.admitted).total_seconds() for row in bots)
    ideal_s = held / limit
    gaps = []
    for row in bots:
        freed = [end for end in ends if end <= row.admitted]
        gaps.append((row.admitted - (freed[-1] if freed else released)).total_seconds())
    post = latency_stats([took for _, took in answers], 50, 99)
    during = latency_stats([took for _, took in busy], 50, 99)
    codes: dict[str, int] = {}
    for code, _ in answers:
        codes[str(code)] = codes.get(str(code), 0) + 1
    values = {
        "bots": count,
        "limit": limit,
        "connections": connections,
        "post_p50_s": post["p50_s"],
        "post_p99_s": post["p99_s"],
        "post_max_s": post["max_s"],
        "posts_answered_s": posted,
        "answers": codes,
        "post_while_draining": during,
        "drain_s": drain_s,
        "drain_bots_per_s": count / drain_s,
        "ran": len(bots),
        "failed": sum(1 for row in bots if row.status == "failed"),
        "admission_gap_p50_s": pct(gaps, 50),
        "admission_gap_p99_s": pct(gaps, 99),
    }
    ratio = drain_s / ideal_s
    return Figure(
        key=KEY,
        title=f"Burst of {count} POST /bots with queue: true against a limit of {limit}",
        label=f"queue [{count} POSTs, limit {limit}]",
        measured=(
            f"POST p50 {ms(post['p50_s'])}, p99 {ms(post['p99_s'])} ({connections} connections,"
            f" all {count} answered 201 queued in {posted:.1f} s; while the drain's bots start:"
            f" p50 {ms(during['p50_s'])}, p99 {ms(during['p99_s'])}), drained in {drain_s:.1f} s"
            f" ({count / drain_s:.1f} bots/s), admission gap p50 {ms(pct(gaps, 50))},"
            f" p99 {ms(pct(gaps, 99))}"
        ),
        floor_text=(
            f"POST p99 < {ms(POST_P99_FLOOR_S)} (the 429 it replaces: p50 {ms(floor['p50_s'])},"
            f" p99 {ms(floor['p99_s'])}); the engine's pace: slots always busy {ideal_s:.1f} s"
        ),
        ratio_text=f"{ratio:.2f}x (drain / slots always busy)",
        values=values,
        floor={
            "post_p99_target_s": POST_P99_FLOOR_S,
            "refused_429": floor,
            "drain_s_slots_always_busy": ideal_s,
        },
        ratio=ratio,
        ratio_of="drain time / the bots' own slot time divided by the limit",
        samples={"post": [took for _, took in answers], "admission_gap": gaps},
        notes="the burst is sent while the limit's slots are held by bots scheduled an hour"
        " ahead (the POST path alone); they are then stopped and the drain timed from there;"
        " `post_while_draining`: 200 more queued POSTs (another user's) sent as the drain's"
        " bots start on the same cores; the per-key rate limit is raised for this figure; a"
        " bot holds a slot from its admission to its end; the admission gap runs from the last"
        " slot freed before an admission (or the release) to it",
    )


def timer_lateness(manager: Manager, *, bots: int) -> Figure:
    """`bots` bots with a `start_at` 3-6 s ahead and `max_duration_s: 1`, and `bots` crashing
    bots with a 1 s restart backoff: how late each timer fired."""
    _, client = manager.new_user(max_bots=bots * 3)
    now = datetime.now(UTC)
    timed, crashing = [], []
    for _ in range(bots):
        start_at = now + timedelta(seconds=3 + 3 * random.random())
        body = {"bot": "demo", "config": {}, "start_at": start_at.isoformat(), "max_duration_s": 1}
        timed.append(client.post("/bots", json=body).json()["id"])
        body = {"bot": "demo", "config": {"crash_after_s": 0.3},
                "restart": {"max_retries": 1, "backoff_s": 1}}  # fmt: skip
        crashing.append(client.post("/bots", json=body).json()["id"])
    ids = timed + crashing
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        bots_now = [client.get(f"/bots/{i}").json() for i in ids]
        if all(b["status"] in ("completed", "failed") for b in bots_now):
            break
        time.sleep(1)
    late: dict[str, list[float]] = {"start_at": [], "max_duration": [], "restart": []}
    for bot_id in ids:
        bot = client.get(f"/bots/{bot_id}").json()
        moves = client.get(f"/bots/{bot_id}/transitions").json()["items"]
        at = {(m["to"], m["reason"]): datetime.fromisoformat(m["at"]) for m in moves}
        if bot_id in timed and bot["start_at"] and ("stopping", "max_duration") in at:
            started = datetime.fromisoformat(bot["started_at"])
            late["start_at"].append(
                (started - datetime.fromisoformat(bot["start_at"])).total_seconds()
            )
            due = datetime.fromisoformat(bot["active_at"]) + timedelta(seconds=1)
            late["max_duration"].append((at[("stopping", "max_duration")] - due).total_seconds())
        elif bot_id in crashing and ("starting", "restarting") in at and bot["attempt"] == 2:
            due = at[("starting", "restarting")] + timedelta(seconds=1)
            late["restart"].append(
                (datetime.fromisoformat(bot["started_at"]) - due).total_seconds()
            )
    client.close()
    stats = {name: latency_stats(values, 50, 99) for name, values in late.items()}
    worst = max((s["max_s"] for s in stats.values() if s["n"]), default=float("nan"))
    measured = ", ".join(
        f"{name} p50 {ms(s['p50_s'])} p99 {ms(s['p99_s'])} (n={int(s['n'])})"
        for name, s in stats.items()
    )
    return Figure(
        key=TIMERS_KEY,
        title="How late the timers fire: start_at, max_duration_s, restart backoff",
        label=f"timers [{bots} + {bots} bots]",
        measured=measured + f"; worst {ms(worst)}",
        floor_text=f"within {TIMER_BOUND_S:g} s of their time (issue 30); the timer interval 0.5 s",
        ratio_text=f"{worst / TIMER_BOUND_S:.2f}x (worst / 1 s)",
        values={name: stats[name] for name in stats},
        floor={"bound_s": TIMER_BOUND_S, "timer_interval_s": 0.5},
        ratio=worst / TIMER_BOUND_S,
        ratio_of="the latest firing / the 1 s bound",
        samples=late,
        notes="start_at: the launch's `started_at` after `start_at`; max_duration: the stop's"
        " transition after `active_at` + 1 s; restart: the second attempt's launch after the"
        " restart's transition + 1 s (a hair early at most: that transition is stored a moment"
        " after the backoff begins); reconciler interval 5 s, timers 0.5 s (the defaults)",
    )


def run(
    tmp: Path, redis_url: str, *, count: int = 1000, limit: int = 20, connections: int = 8,
    timer_bots: int = 10,
) -> tuple[Figure, Figure]:  # fmt: skip
    """Both figures, on one manager (PostgreSQL, process backend, default intervals)."""
    with bench_manager(tmp / f"queue-{uuid.uuid4().hex[:6]}", redis_url, extra=RATE_ENV) as m:
        burst = queue_burst(m, count=count, limit=limit, connections=connections)
        timers = timer_lateness(m, bots=timer_bots)
    return burst, timers


def main() -> None:
    """This figure alone: `python -m bench.queue --count 1000 --limit 20`."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--timer-bots", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="botfleet-queue-") as name:
        tmp = Path(name)
        redis_server = RedisServer(tmp / "redis")
        redis_server.start()
        try:
            figures = run(tmp, redis_server.url, count=args.count, limit=args.limit,
                          connections=args.connections, timer_bots=args.timer_bots)  # fmt: skip
            for figure in figures:
                figure.show()
                print(figure.values, flush=True)
        finally:
            redis_server.stop()


if __name__ == "__main__":
    main()

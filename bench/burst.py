"""Figure 2, burst: N POSTs at once; the time until all N are `active`, bots per second, errors,
and each POST's latency (p50/p99).

The floor is N bare runtimes (process spawns or `docker run`s) started at once, timed until all
have called back `started`; they are stopped before the manager's burst begins, so the two never
share the machine. The manager's bots are left running for the next figures; the caller stops
them (`common.stop_all`).

Progress is read from the database (one count query a poll), not through the API: polling 1,000
bots' pages several times a second would load the manager being measured. The time until all are
active is the latest `active_at` (the wall clock of the callback's transaction) since the first
POST was sent.

`python -m bench.burst --count N` runs this figure alone (optionally without the floor, and with
a py-spy profile of the manager) for iterating on the launch path.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from bench.common import (
    TERMINAL,
    CallbackReceiver,
    Figure,
    bench_manager,
    docker_run_bare,
    latency_stats,
    ms,
    ratio,
    remove_floor_containers,
    spawn_bare_runtime,
    stop_all,
    stop_processes,
)
from tests.support import Manager, RedisServer

WAIT_POLL_S = 0.25
MAX_DEFERRALS = 20  # Retry-After answers a POST follows before it counts as an error


async def _post_all(url: str, key: str, count: int) -> list[tuple[int, str | None, float, int]]:
    """`count` POST /bots sent at once: (final status code, bot id or None, seconds from the first
    send to the final answer, answers deferred) each; a transport error counts as status 0.

    A well-behaved client: a 503 `database_busy` or 429 is retried after its Retry-After (the
    manager's backpressure, counted as deferred, not as an error), with an Idempotency-Key so
    that a retry can never create a second bot."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=120) as c:

        async def one() -> tuple[int, str | None, float, int]:
            began = time.perf_counter()
            request_headers = {"Idempotency-Key": uuid.uuid4().hex}
            deferred = 0
            while True:
                try:
                    response = await c.post(
                        "/bots", json={"bot": "demo", "config": {}}, headers=request_headers
                    )
                except httpx.TransportError:
                    # e.g. a pooled connection the server closed while we waited: the
                    # Idempotency-Key makes sending again safe, as any careful client does.
                    if deferred >= MAX_DEFERRALS:
                        return 0, None, time.perf_counter() - began, deferred
                    deferred += 1
                    continue
                if response.status_code in (429, 503) and deferred < MAX_DEFERRALS:
                    deferred += 1
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                    continue
                took = time.perf_counter() - began
                bot_id = response.json().get("id") if response.is_success else None
                return response.status_code, bot_id, took, deferred

        return await asyncio.gather(*(one() for _ in range(count)))


def _wait_settled(database_url: str, ids: set[str], timeout: float) -> dict[str, datetime]:
    """Poll the database until every bot of `ids` is active or ended: {bot id: active_at} of
    those that became active (ended ones are missing)."""
    engine = create_engine(database_url)
    settled = ", ".join(f"'{status}'" for status in sorted({"active", *TERMINAL}))
    count = text(f"SELECT count(*) FROM bots WHERE id = ANY(:ids) AND status IN ({settled})")
    wanted = sorted(ids)
    deadline = time.monotonic() + timeout
    try:
        with engine.connect() as conn:
            while conn.execute(count, {"ids": wanted}).scalar_one() < len(wanted):
                conn.rollback()  # a fresh snapshot each poll
                if time.monotonic() > deadline:
                    break
                time.sleep(WAIT_POLL_S)
            rows = conn.execute(
                text("SELECT id, active_at FROM bots WHERE id = ANY(:ids) AND status = 'active'"),
                {"ids": wanted},
            )
            return {bot_id: at for bot_id, at in rows}
    finally:
        engine.dispose()


def manager_burst(manager: Manager, count: int) -> tuple[dict[str, float], list[str], httpx.Client]:
    """Fire the burst and wait until every accepted bot is active (or ended)."""
    user, client = manager.new_user(max_bots=count + 10)
    wall = time.time()
    began = time.perf_counter()
    answers = asyncio.run(_post_all(manager.url, user["api_key"], count))
    posted = time.perf_counter() - began
    ids = [bot_id for code, bot_id, _, _ in answers if code == 201 and bot_id]
    codes: dict[str, int] = {}
    for code, _, _, _ in answers:
        if code != 201:
            codes[str(code)] = codes.get(str(code), 0) + 1
    errors = len(answers) - len(ids)
    wanted = set(ids)
    active = _wait_settled(manager.database_url, wanted, timeout=900)
    settled = time.perf_counter() - began
    last = max((at.timestamp() for at in active.values()), default=wall) - wall
    post = latency_stats([took for _, _, took, _ in answers], 50, 99)
    deferred = sum(1 for *_, times in answers if times)
    values = {
        "bots": count,
        "all_active_s": last if len(active) == len(wanted) else settled,
        "bots_per_s": len(active) / max(last, 1e-9),
        "posts_answered_s": posted,
        "post_p50_s": post["p50_s"],
        "post_p99_s": post["p99_s"],
        "post_max_s": post["max_s"],
        "posts_deferred": deferred,  # answered 503/429 with Retry-After first, then retried
        "errors": errors + len(wanted) - len(active),
        "non_201": errors,
        "non_201_codes": codes,
        "not_active": len(wanted) - len(active),
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
    label = "bare python -m botfleet.runtime" if backend == "process" else "bare docker run"
    figure = Figure(
        key=f"burst_{backend}",
        title=f"Burst of {count} POST /bots at once, {backend} backend",
        label=f"burst [{backend}] ({count} POSTs at once)",
        measured=(
            f"all active in {values['all_active_s']:.1f} s, {values['bots_per_s']:.1f} bots/s,"
            f" POST p50 {ms(values['post_p50_s'])}, p99 {ms(values['post_p99_s'])}"
            f" (all answered in {values['posts_answered_s']:.1f} s; {values['posts_deferred']}"
            f" deferred by Retry-After first), errors {values['errors']}"
        ),
        floor_text=(
            f"{count} x {label} {floor['all_started_s']:.1f} s, {floor['bots_per_s']:.1f} bots/s"
        ),
        ratio_text=f"{r:.2f}x (time)",
        values=values,
        floor={"what": f"{count} x {label} at once, until all called back `started`", **floor},
        ratio=r,
        ratio_of="time until all active / floor time until all started",
        notes="errors = final non-201 answers + accepted bots that did not become active; a"
        " 503/429 with Retry-After is the manager's backpressure: the client waits and retries"
        " (with an Idempotency-Key), and the POST's latency runs from its first send to its final"
        " answer, so the tail includes the queue and the waits",
    )
    return figure, active, client


@contextmanager
def _profiled(pid: int, out: Path | None) -> Iterator[None]:
    """py-spy record of `pid` (raw collapsed stacks) while the block runs; nothing without out."""
    if out is None:
        yield
        return
    spy = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "-p",
            str(pid),
            "-o",
            str(out),
            "-f",
            "raw",
            "-r",
            "50",
            "--nonblocking",
            "--gil",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes the profile and exits
        spy.wait(60)


def main() -> None:
    """This figure alone: `python -m bench.burst --count 1000 [--no-floor] [--profile out.txt]`."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--backend", choices=("process", "docker"), default="process")
    parser.add_argument("--no-floor", action="store_true", help="measure the manager only")
    parser.add_argument("--profile", type=Path, help="py-spy raw profile of the manager")
    parser.add_argument("--env", nargs="*", default=[], help="manager settings, KEY=VALUE")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory(prefix="botfleet-burst-") as name:
        tmp = Path(name)
        redis_server = RedisServer(tmp / "redis")
        redis_server.start()
        try:
            with bench_manager(tmp / "m", redis_server.url, backend=args.backend, extra=extra) as m:
                assert m.proc is not None
                if not args.no_floor:
                    floor = floor_burst(args.backend, args.count, redis_server.url, tmp)
                    print(f"floor: {floor}", flush=True)
                with _profiled(m.proc.pid, args.profile):
                    values, active, client = manager_burst(m, args.count)
                print(f"manager: {values}", flush=True)
                with client:
                    stop_all(client, active, timeout=600)
        finally:
            redis_server.stop()


if __name__ == "__main__":
    main()

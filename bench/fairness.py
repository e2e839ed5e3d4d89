"""Figure 9, fairness: a well-behaved user's p99 while another user floods the API.

The well-behaved user reads its bots (GET /bots/{id}) at a steady pace under its rate limit,
one request every 1/`pace_per_s` seconds on one keep-alive connection, first alone, then while
another user's closed-loop generator floods GET /bots/{id} on `connections` connections as
fast as the manager answers (mostly 429 `rate_limited`, once its burst is spent). The manager
runs with its default limits. The figure is the p99 under the flood; its floor is the same p99
without it, measured in the same run: the ratio says what the flood costs the user.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import Figure, active_rows, bench_manager, insert_bots, latency_stats, ms, ratio
from bench.loadgen import LoadResult, Request, _encode, _read_response, picker, run_load
from botfleet.manager.core.settings import Settings

#: The manager's own default limits (the tests' managers raise them; a benchmark must not), and
#: a heartbeat budget set high: the inserted rows never send one.
FAIRNESS_ENV = {
    f"BOTFLEET_{name.upper()}": str(Settings.model_fields[name].default)
    for name in ("rate_limit_per_s", "rate_limit_burst", "db_pool_size", "admission_wait_s")
} | {"BOTFLEET_HEARTBEAT_S": "3600"}


async def _paced(
    host: str, port: int, requests: list[Request], pace_per_s: float, duration_s: float
) -> LoadResult:
    """One request every 1/pace_per_s s at most, for duration_s; latencies of the 200s. A
    slow answer delays the next request but never makes the client catch up in a burst: a
    polite user stays under its limit."""
    result = LoadResult(duration_s=duration_s)
    reader, writer = await asyncio.open_connection(host, port)
    hostport = f"{host}:{port}"
    began = due = time.perf_counter()
    try:
        for request in requests:
            due = max(due, time.perf_counter())
            if due > began + duration_s:
                break
            await asyncio.sleep(due - time.perf_counter())
            due += 1 / pace_per_s
            sent = time.perf_counter()
            writer.write(_encode(hostport, request))
            status = await _read_response(reader)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status == 200:
                result.latencies.append(time.perf_counter() - sent)
            else:
                result.errors += 1
    finally:
        writer.close()
    result.duration_s = time.perf_counter() - began
    return result


def paced_load(url: str, requests: list[Request], pace_per_s: float, duration_s: float) -> Any:
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    return asyncio.run(_paced(host, int(port), requests, pace_per_s, duration_s))


def _gets(ids: list[str], api_key: str, count: int) -> list[Request]:
    pick = picker(ids)
    headers = {"Authorization": f"Bearer {api_key}"}
    return [("GET", f"/bots/{pick()}", headers, b"") for _ in range(count)]


def _flood(url: str, ids: list[str], api_key: str, connections: int, duration_s: float) -> Any:
    """The flooding user, run in a process of its own (a thread would share the GIL with the
    polite user's client and slow its measurement down instead of the server)."""
    pick = picker(ids)
    headers = {"Authorization": f"Bearer {api_key}"}
    return run_load(
        url,
        lambda: ("GET", f"/bots/{pick()}", headers, b""),
        connections=connections,
        duration_s=duration_s,
        ok={200, 429},
    )


def _summary(result: LoadResult) -> dict[str, Any]:
    stats = latency_stats(result.latencies, 50, 99)
    return {
        "requests": result.requests,
        "rps": result.rps,
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
        **{k: stats[k] for k in ("n", "p50_s", "p99_s", "max_s")},
    }


def run(
    root: Path,
    redis_url: str,
    *,
    connections: int = 32,
    duration_s: float = 20.0,
    pace_per_s: float = 10.0,
) -> Figure:
    with bench_manager(root / "fairness", redis_url, extra=FAIRNESS_ENV) as manager:
        polite, polite_client = manager.new_user(max_bots=100)
        flooder, flood_client = manager.new_user(max_bots=100)
        rows, tokens = active_rows(20)
        insert_bots(manager.database_url, polite["id"], rows)
        polite_ids = list(tokens)
        rows, tokens = active_rows(20)
        insert_bots(manager.database_url, flooder["id"], rows)
        flood_ids = list(tokens)
        for bot_id in polite_ids[:5]:  # warm-up, well under the limit
            polite_client.get(f"/bots/{bot_id}").raise_for_status()
        polite_client.close()
        flood_client.close()
        count = int(duration_s * pace_per_s) + 1
        alone = paced_load(
            manager.url, _gets(polite_ids, polite["api_key"], count), pace_per_s, duration_s
        )
        time.sleep(5)  # the polite key's bucket refills between the phases

        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            flooding = pool.submit(
                _flood, manager.url, flood_ids, flooder["api_key"], connections, duration_s + 2
            )
            time.sleep(1.5)  # the flood is on before the first measured request
            flooded = paced_load(
                manager.url, _gets(polite_ids, polite["api_key"], count), pace_per_s, duration_s
            )
            flood: LoadResult = flooding.result()
    values = {
        "pace_per_s": pace_per_s,
        "flood_connections": connections,
        "polite_while_flooded": _summary(flooded),
        "flood": {
            "rps": flood.rps,
            "requests": flood.requests,
            "statuses": {str(k): v for k, v in sorted(flood.statuses.items())},
        },
    }
    floor = {"what": "the same user's reads without the flood", **_summary(alone)}
    p99, p99_alone = values["polite_while_flooded"]["p99_s"], floor["p99_s"]
    r = ratio(p99, p99_alone)
    served = flood.statuses.get(200, 0)
    limited = flood.statuses.get(429, 0)
    polite_errors = flooded.errors
    return Figure(
        key="fairness_flood",
        title=f"A polite user's reads ({pace_per_s:g}/s) while another floods "
        f"({connections} connections)",
        label=f"fairness ({pace_per_s:g} GETs/s beside a {connections}-connection flood)",
        measured=(
            f"p50 {ms(values['polite_while_flooded']['p50_s'])}, p99 {ms(p99)}, errors "
            f"{polite_errors}; the flood got {served} answers and {limited} refusals (429) "
            f"({flood.rps:.0f}/s)"
        ),
        floor_text=f"no flood: p50 {ms(floor['p50_s'])}, p99 {ms(p99_alone)}",
        ratio_text=f"{r:.2f}x (p99)",
        values=values,
        floor=floor,
        ratio=r,
        ratio_of="p99 while flooded / p99 alone",
        samples={"manager": flooded.latencies, "floor": alone.latencies},
        notes="the default limits: "
        + ", ".join(f"{k}={v}" for k, v in FAIRNESS_ENV.items() if k != "BOTFLEET_HEARTBEAT_S"),
    )

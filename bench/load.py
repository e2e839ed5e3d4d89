"""Figure 4, the manager under load, and the manager half of figure 5 (its RSS by records).

1,000 simulated bots are rows inserted straight into the manager's database as `active`, with
known tokens (`bots.token_hash` is the SHA-256 of each). A closed-loop generator then sends
their heartbeats (POST /internal/bots/{id}/callbacks) for a fixed time, then GET /bots/{id}
with the owner's key. The manager is the real process; the heartbeat budget is set high so the
reconciler does not fail the silent rows meanwhile.

The floor: the same generator against a bare ASGI app on the same server stack
(`bench.floor_app`), which does no work: what the machine and HTTP layer allow.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench import commands
from bench.common import (
    BENCH_ENV,
    Figure,
    active_rows,
    bench_manager,
    insert_bots,
    latency_stats,
    mib,
    ms,
    ratio,
    rss_bytes,
)
from bench.loadgen import LoadResult, Stream, each_once, picker, run_load, run_streams
from tests.support import REPO, Manager, wait_until

#: Heartbeats that never come must not fail the inserted rows during the phase.
LOAD_ENV = {"BOTFLEET_HEARTBEAT_S": "3600"}
RECORD_STEPS = (200, 1000, 10_000)
#: A user's reads while the fleet heartbeats (requests/s each, paced: a person or a dashboard).
USER_GETS_PER_S = 10.0
USER_LISTS_PER_S = 5.0
SIMULATED_COMMAND_BOTS = 1000


@contextmanager
def floor_server() -> Iterator[str]:
    """`bench.floor_app` served by uvicorn on a loopback socket bound here (port 0: the kernel
    picks, nothing can take it between); its URL."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=2048)
    listener.set_inheritable(True)
    port = listener.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.floor_app:app",
            "--fd",
            str(listener.fileno()),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=REPO,
        pass_fds=[listener.fileno()],
    )
    listener.close()  # the server holds its own copy
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=30, what="the floor server")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def heartbeat_requests(tokens: dict[str, str]) -> Any:
    ids = list(tokens)
    pick = picker(ids)
    body = json.dumps({"event": "heartbeat"}).encode()
    headers = {
        bot_id: {"Authorization": f"Bearer {t}", "Content-Type": "application/json"}
        for bot_id, t in tokens.items()
    }

    def make() -> tuple[str, str, dict[str, str], bytes]:
        bot_id = pick()
        return "POST", f"/internal/bots/{bot_id}/callbacks", headers[bot_id], body

    return make


def get_requests(ids: list[str], api_key: str) -> Any:
    pick = picker(ids)
    headers = {"Authorization": f"Bearer {api_key}"}

    def make() -> tuple[str, str, dict[str, str], bytes]:
        return "GET", f"/bots/{pick()}", headers, b""

    return make


def list_requests(api_key: str) -> Any:
    """A user's page of active bots (the fleet view's query)."""
    request = ("GET", "/bots?status=active&limit=100", {"Authorization": f"Bearer {api_key}"}, b"")
    return lambda: request


def warm_requests(tokens: dict[str, str]) -> Any:
    """Each bot's heartbeat once, in order: the manager has then authenticated every bot once,
    as it has in a fleet that runs (a cold token costs one database read)."""
    ids = list(tokens)
    order = each_once(ids)
    body = json.dumps({"event": "heartbeat"}).encode()

    def make() -> tuple[str, str, dict[str, str], bytes]:
        bot_id = order()
        headers = {"Authorization": f"Bearer {tokens[bot_id]}", "Content-Type": "application/json"}
        return "POST", f"/internal/bots/{bot_id}/callbacks", headers, body

    return make


def _summary(result: LoadResult) -> dict[str, Any]:
    stats = latency_stats(result.latencies, 50, 99)
    return {
        "rps": result.rps,
        "requests": result.requests,
        "errors": result.errors,
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
        "duration_s": result.duration_s,
        **{k: stats[k] for k in ("p50_s", "p99_s", "max_s")},
    }


def _touch(manager: Manager, tokens: dict[str, str]) -> None:
    """One heartbeat per new record (32 at a time), so the manager has seen each of them."""
    seconds = max(3.0, len(tokens) / 400)
    run_load(manager.callback_url, warm_requests(tokens), connections=32, duration_s=seconds)


def _settle(manager: Manager) -> int:
    """Wait for a reconciler tick (the default interval), then read the manager's RSS."""
    time.sleep(float(BENCH_ENV["BOTFLEET_RECONCILE_INTERVAL_S"]) + 1.5)
    assert manager.proc is not None
    return rss_bytes(manager.proc.pid)


def _streams(
    tokens: dict[str, str],
    api_key: str,
    *,
    connections: int,
    heartbeats_per_s: float | None,
    callback_url: str | None,
) -> list[Stream]:
    """Heartbeats to the bots' listener (closed loop over `connections`, or paced at
    `heartbeats_per_s`) and a user's paced reads."""
    beats = Stream(heartbeat_requests(tokens), connections=connections, url=callback_url)
    if heartbeats_per_s:
        beats = Stream(heartbeat_requests(tokens), rate_per_s=heartbeats_per_s, url=callback_url)
    return [
        beats,
        Stream(get_requests(list(tokens), api_key), rate_per_s=USER_GETS_PER_S),
        Stream(list_requests(api_key), rate_per_s=USER_LISTS_PER_S),
    ]


def _phases(
    url: str,
    tokens: dict[str, str],
    api_key: str,
    connections: int,
    duration_s: float,
    callback_url: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Two phases, each with a user reading meanwhile: the heartbeats as fast as the server
    absorbs them ("flood"), then at the rate the simulated fleet really sends them ("fleet")."""
    fleet_rate = len(tokens) / float(BENCH_ENV["BOTFLEET_HEARTBEAT_S"])
    out: dict[str, dict[str, Any]] = {}
    for phase, rate in (("flood", None), ("fleet", fleet_rate)):
        streams = _streams(tokens, api_key, connections=connections, heartbeats_per_s=rate,
                           callback_url=callback_url)  # fmt: skip
        beats, gets, lists = run_streams(url, streams, duration_s=duration_s)
        out[phase] = {
            "heartbeats": _summary(beats),
            "get_bot": _summary(gets),
            "list_active": _summary(lists),
            "heartbeats_offered_per_s": rate,
        }
    return out


DATABASES = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}


def key(database: str) -> str:
    return "manager_load" if database == "postgresql" else f"manager_load_{database}"


@contextmanager
def _database(kind: str) -> Iterator[None]:
    """New managers' databases of this kind (tests.support.fresh_database_url reads it)."""
    before = os.environ.get("BOTFLEET_TEST_DATABASE")
    os.environ["BOTFLEET_TEST_DATABASE"] = kind
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("BOTFLEET_TEST_DATABASE", None)
        else:
            os.environ["BOTFLEET_TEST_DATABASE"] = before


def run(
    root: Path,
    redis_url: str,
    *,
    connections: int = 32,
    duration_s: float = 10.0,
    commands_count: int = 200,
    database: str = "postgresql",
) -> tuple[Figure, dict[str, float], Figure]:
    """The load figure, the manager's RSS (MiB) by number of active records, and the command
    round trip with `SIMULATED_COMMAND_BOTS` of those records acking as simulated bots, with the
    manager on `database` (postgresql or sqlite)."""
    rss: dict[str, float] = {}
    with (
        _database(database),
        bench_manager(root / f"load-{database}", redis_url, extra=LOAD_ENV) as manager,
    ):
        user, client = manager.new_user(max_bots=RECORD_STEPS[-1] + 100)
        with client:
            for _ in range(20):  # warm-up: imports and connections that the first requests pay
                client.get("/bots")
                client.get("/bots/00000000-0000-7000-8000-000000000000")
            rss["0"] = mib(_settle(manager))
            tokens: dict[str, str] = {}
            for step in RECORD_STEPS:
                rows, new = active_rows(step - len(tokens))
                insert_bots(manager.database_url, user["id"], rows)
                _touch(manager, new)
                tokens |= new
                rss[str(step)] = mib(_settle(manager))
            measured = _phases(manager.url, tokens, user["api_key"], connections, duration_s,
                               manager.callback_url)  # fmt: skip
            assert manager.proc is not None
            rss["after_load"] = mib(rss_bytes(manager.proc.pid))
            simulated = dict(list(tokens.items())[:SIMULATED_COMMAND_BOTS])
            round_trip = commands.measure_simulated(
                client, manager.callback_url, redis_url, simulated, count=commands_count
            )
            if database != "postgresql":
                round_trip.key += f"_{database}"
                round_trip.title += f" ({DATABASES[database]})"
    with floor_server() as url:
        floor = _phases(url, tokens, user["api_key"], connections, duration_s)
    flood, fleet = measured["flood"], measured["fleet"]
    r_beats = ratio(flood["heartbeats"]["rps"], floor["flood"]["heartbeats"]["rps"])
    values: dict[str, Any] = {"simulated_bots": len(tokens), "connections": connections}
    values |= measured
    values["ratio_heartbeats_to_floor"] = r_beats
    c = flood["heartbeats"]
    bots_served = c["rps"] * float(BENCH_ENV["BOTFLEET_HEARTBEAT_S"])
    figure = Figure(
        key=key(database),
        title=f"Manager under load ({DATABASES[database]}): {len(tokens):,} simulated active bots"
        " heartbeating,"
        " a user reading meanwhile",
        label=f"manager load [{database}] ({len(tokens)} simulated bots, {duration_s:.0f} s per"
        " phase)",
        measured=(
            f"heartbeats absorbed {c['rps']:.0f}/s (closed loop, {connections} connections:"
            f" p99 {ms(c['p99_s'])}, errors {c['errors']}; the user's GET /bots/{{id}} p99"
            f" {ms(flood['get_bot']['p99_s'])}, GET /bots?status=active&limit=100 p99"
            f" {ms(flood['list_active']['p99_s'])});"
            f" at the fleet's own rate ({fleet['heartbeats_offered_per_s']:.0f}/s: heartbeat p99"
            f" {ms(fleet['heartbeats']['p99_s'])}, errors {fleet['heartbeats']['errors']}) the"
            f" user's GET p99 {ms(fleet['get_bot']['p99_s'])}, list p99"
            f" {ms(fleet['list_active']['p99_s'])},"
            f" errors {fleet['get_bot']['errors'] + fleet['list_active']['errors']}"
        ),
        floor_text=(
            f"bare ASGI app {floor['flood']['heartbeats']['rps']:.0f}/s (p99"
            f" {ms(floor['flood']['heartbeats']['p99_s'])}); its GETs p99"
            f" {ms(floor['fleet']['get_bot']['p99_s'])}"
        ),
        ratio_text=f"{r_beats:.3f}x (heartbeats/s)",
        values=values,
        floor={"what": "the same phases against a bare ASGI app on uvicorn (no work)", **floor},
        ratio=r_beats,
        ratio_of="heartbeats/s / floor requests/s (flood phase)",
        notes=f"at a {BENCH_ENV['BOTFLEET_HEARTBEAT_S']} s heartbeat the absorbed rate serves"
        f" ~{bots_served:,.0f} bots; the user's reads are paced ({USER_GETS_PER_S:.0f}/s and"
        f" {USER_LISTS_PER_S:.0f}/s)",
    )
    return figure, rss, round_trip

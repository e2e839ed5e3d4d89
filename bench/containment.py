"""Figure 11, containment (issue 27): another user's p99 while one user's bot misbehaves.

A polite user runs three real `demo` bots (process backend) and reads one of them
(GET /bots/{id}) ten times a second, first with nothing else going on (the floor), then during
each attack of a hostile user, one after the other, each for `seconds`:
- from outside, as a bot's code can: thousands of idle connections and slow-header connections
  to the bots' listener; random bearer tokens as fast as it can; JSON nested 500 deep;
- from inside a real bot (bench/hostile_bot.py): stdout in a loop, two processes over the
  memory limit, /tmp and /dev/shm filled, runaway children.
The figure is the worst attack's p99 over the quiet p99 (the goal: at most 3x), each attack's
p99 and errors beside it, and whether any of the polite user's bots was harmed (a transition
after `active`, or a heartbeat older than its budget at the end).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import resource
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.common import REPO, Figure, bench_manager, latency_stats, ms, ratio
from bench.fairness import _gets, paced_load
from bench.loadgen import run_load
from tests.support import Manager, wait_for_status

PACE_PER_S = 10.0
CONNECTIONS = 3000  # idle connections held to the bots' listener
SLOW_HEADERS = 900  # connections that send half a request line and stop
ENV = {
    "BOTFLEET_ALLOWED_BOT_MODULES": '["bench.hostile_bot"]',
    "PYTHONPATH": str(REPO),
    "BOTFLEET_PROCESS_RLIMIT_AS_MB": "512",
}


def _hold_connections(port: int, count: int, slow: int, seconds: float) -> int:
    """Open `count` idle and `slow` slow-header connections to `port`; hold them `seconds`.
    Returns how many were open at once (the listener may refuse or close some)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + slow + 256)), hard))
    held: list[socket.socket] = []
    deadline = time.monotonic() + seconds
    with contextlib.ExitStack() as stack:
        for i in range(count + slow):
            if time.monotonic() > deadline:
                break
            try:
                sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), 2))
            except OSError:
                continue
            if i >= count:
                with contextlib.suppress(OSError):
                    sock.sendall(b"POST /internal/bots/x/heartbeat HTTP/1.1\r\nHost: a")
            held.append(sock)
        opened = len(held)
        time.sleep(max(deadline - time.monotonic(), 0))
    return opened


def _bad_tokens(url: str, seconds: float) -> Any:
    return run_load(
        url,
        lambda: ("GET", "/bots", {"Authorization": f"Bearer bf_{secrets.token_hex(16)}"}, b""),
        connections=16,
        duration_s=seconds,
        ok={401, 429},
    )


def _deep_json(url: str, api_key: str, seconds: float) -> Any:
    body = ('{"bot": "demo", "config": ' + "[" * 500 + "]" * 500 + "}").encode()
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    return run_load(
        url,
        lambda: ("POST", "/bots", headers, body),
        connections=8,
        duration_s=seconds,
        ok={413, 422, 429},
    )


@contextlib.contextmanager
def _in_a_process(fn: Callable[..., Any], *args: Any) -> Iterator[None]:
    """Run an outside attack in a process of its own (not the measuring client's GIL)."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        future = pool.submit(fn, *args)
        time.sleep(1.5)  # the attack is on before the first measured request
        yield
        future.result()


@contextlib.contextmanager
def _hostile_bot(client: httpx.Client, config: dict[str, Any]) -> Iterator[None]:
    bot = client.post("/bots", json={"bot": "bench.hostile_bot:HostileBot", "config": config})
    bot.raise_for_status()
    wait_for_status(client, bot.json()["id"], {"active", "failed", "completed"}, timeout=60)
    try:
        yield
    finally:
        client.post(f"/bots/{bot.json()['id']}/stop")
        wait_for_status(client, bot.json()["id"], {"failed", "completed"}, timeout=60)


Attack = Callable[[], contextlib.AbstractContextManager[None]]


def _attacks(
    manager: Manager, hostile: dict[str, Any], client: httpx.Client, seconds: float
) -> dict[str, Attack]:
    budget = seconds + 2
    return {
        "connections": lambda: _in_a_process(
            _hold_connections, manager.callback_port, CONNECTIONS, SLOW_HEADERS, budget
        ),
        "bad_tokens": lambda: _in_a_process(_bad_tokens, manager.url, budget),
        "deep_json": lambda: _in_a_process(_deep_json, manager.url, hostile["api_key"], budget),
        "log_flood": lambda: _hostile_bot(client, {"attack": "log_flood", "seconds": budget}),
        "memory": lambda: _hostile_bot(client, {"attack": "memory", "mb": 400, "seconds": budget}),
        "tmp_fill": lambda: _hostile_bot(client, {"attack": "tmp_fill", "mb": 1024}),
        "fork": lambda: _hostile_bot(client, {"attack": "fork", "seconds": budget}),
    }


def _harm(client: httpx.Client, bot_ids: list[str]) -> list[str]:
    """What happened to the polite user's bots: anything after `active` is harm."""
    harmed = []
    for bot_id in bot_ids:
        bot = client.get(f"/bots/{bot_id}").json()
        moves = client.get(f"/bots/{bot_id}/transitions").json()["items"]
        if bot["status"] != "active" or moves[-1]["to"] != "active":
            harmed.append(f"{bot_id}: {bot['status']} ({bot.get('status_reason')})")
    return harmed


def run(root: Path, redis_url: str, *, seconds: float = 8.0) -> Figure:
    with bench_manager(root / "containment", redis_url, extra=ENV) as manager:
        polite, polite_client = manager.new_user(max_bots=10)
        hostile, hostile_client = manager.new_user(max_bots=10)
        bot_ids = []
        for _ in range(3):
            made = polite_client.post("/bots", json={"bot": "demo", "config": {}})
            made.raise_for_status()
            bot_ids.append(made.json()["id"])
        for bot_id in bot_ids:
            wait_for_status(polite_client, bot_id, {"active"}, timeout=60)
        count = int(seconds * PACE_PER_S) + 1

        def measure() -> Any:
            gets = _gets(bot_ids, polite["api_key"], count)
            return paced_load(manager.url, gets, PACE_PER_S, seconds)

        quiet = measure()
        during: dict[str, Any] = {}
        for name, attack in _attacks(manager, hostile, hostile_client, seconds).items():
            try:
                with attack():
                    during[name] = measure()
            except Exception as exc:  # one attack that cannot run does not hide the others
                during[name] = exc
            time.sleep(2)  # the polite key's bucket refills
        harmed = _harm(polite_client, bot_ids)
        polite_client.close()
        hostile_client.close()
    quiet_stats = latency_stats(quiet.latencies, 50, 99)
    values: dict[str, Any] = {"harmed": harmed}
    worst = 0.0
    for name, result in during.items():
        if isinstance(result, Exception):
            values[name] = {"error": f"{type(result).__name__}: {result}"}
            continue
        stats = latency_stats(result.latencies, 50, 99)
        values[name] = {"p50_s": stats["p50_s"], "p99_s": stats["p99_s"], "errors": result.errors}
        worst = max(worst, stats["p99_s"])
    r = ratio(worst, quiet_stats["p99_s"])
    per_attack = ", ".join(
        f"{n} {ms(v['p99_s'])}" if "p99_s" in v else f"{n} not measured"
        for n, v in values.items()
        if n != "harmed"
    )
    return Figure(
        key="containment",
        title="Another user's reads (10/s) during each attack of a hostile bot",
        label="containment (p99 of another user's GET /bots/{id} per attack)",
        measured=f"{per_attack}; polite bots harmed: {len(harmed)}",
        floor_text=f"quiet: p50 {ms(quiet_stats['p50_s'])}, p99 {ms(quiet_stats['p99_s'])}",
        ratio_text=f"{r:.2f}x (worst p99; goal at most 3x)",
        values=values,
        floor={"what": "the same reads with no attack", **quiet_stats},
        ratio=r,
        ratio_of="worst attack's p99 / quiet p99",
        samples={"floor": quiet.latencies},
        notes=json.dumps(
            {
                "seconds_per_attack": seconds,
                "connections": CONNECTIONS,
                "slow_headers": SLOW_HEADERS,
            }
        ),
    )

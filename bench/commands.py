"""Figure 3, command round trip: PATCH /bots/{id}/config → the command `acked`, with N bots
running, beside its floor.

The floor is the physical path without the manager: a reconfigure envelope published straight
on a bare runtime's Redis channel, timed until its ack reaches the stub receiver.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.common import (
    CallbackReceiver,
    Figure,
    floor_token,
    latency_stats,
    ms,
    ratio,
    spawn_bare_runtime,
    stop_processes,
)
from botfleet.runtime.protocol import command_channel, sign_command, signing_key

POLL_S = 0.005  # how often the client looks at the command


def round_trips(
    client: httpx.Client,
    bot_ids: list[str],
    count: int,
    acked_at: Callable[[str, str], float | None],
) -> tuple[list[float], int, dict[str, int]]:
    """`count` PATCH config round trips, round-robin over `bot_ids`: (seconds from each PATCH
    to `acked_at(bot id, command id)`, commands never acked, PATCH answers other than 202 by
    "status code")."""
    samples: list[float] = []
    lost = 0
    errors: dict[str, int] = {}
    for i in range(count):
        bot_id = bot_ids[i % len(bot_ids)]
        began = time.perf_counter()
        response = client.patch(f"/bots/{bot_id}/config", json={"config": {"n": i}})
        if response.status_code != 202:
            code = f"{response.status_code} {response.json().get('detail', {}).get('code', '')}"
            errors[code.strip()] = errors.get(code.strip(), 0) + 1
            continue
        acked = acked_at(bot_id, response.json()["id"])
        if acked is None:
            lost += 1
        else:
            samples.append(acked - began)
    return samples, lost, errors


def manager_samples(
    client: httpx.Client, bot_ids: list[str], count: int
) -> tuple[list[float], int, dict[str, int]]:
    """Round trips to running bots, the command's status polled every `POLL_S`."""

    def polled(bot_id: str, command_id: str) -> float | None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = client.get(f"/bots/{bot_id}/commands/{command_id}").json()["status"]
            if status == "acked":
                return time.perf_counter()
            if status in ("failed", "expired"):
                return None
            time.sleep(POLL_S)
        return None

    return round_trips(client, bot_ids, count, polled)


def floor_samples(redis_url: str, tmp: Path, count: int) -> list[float]:
    """Reconfigure envelopes published to a bare runtime; seconds until each ack arrives."""
    bot_id = f"floor-{uuid.uuid4().hex[:12]}"
    bus = redis.Redis.from_url(redis_url)
    samples: list[float] = []
    with CallbackReceiver() as receiver:
        proc = spawn_bare_runtime(bot_id, receiver.url, redis_url, tmp / "floor-logs")
        try:
            receiver.wait_started([bot_id], timeout=60)
            deadline = time.monotonic() + 10  # until the runtime has subscribed
            while bus.pubsub_numsub(f"bot_commands:{bot_id}")[0][1] < 1:
                if time.monotonic() > deadline:
                    raise TimeoutError("the floor runtime never subscribed to its channel")
                time.sleep(0.01)
            for i in range(count):
                command_id = uuid.uuid4().hex
                message = {
                    "id": command_id,
                    "action": "reconfigure",
                    "config": {"n": i},
                    "config_version": i + 2,
                    "issued_at": datetime.now(UTC).isoformat(),
                }
                began = time.perf_counter()
                signed = message | {"sig": sign_command(message, signing_key(floor_token(bot_id)))}
                bus.publish(f"bot_commands:{bot_id}", json.dumps(signed))
                acked = receiver.wait_ack(command_id, timeout=10)
                if acked is not None:
                    samples.append(acked - began)
        finally:
            stop_processes([proc])
            bus.close()
    return samples


def measure(
    client: httpx.Client, bot_ids: list[str], redis_url: str, tmp: Path, *, count: int = 200
) -> Figure:
    """Manager round trips (with `len(bot_ids)` bots running) and floor round trips."""
    manager_samples(client, bot_ids, 5)  # warm-up
    samples, refused, errors = manager_samples(client, bot_ids, count)
    floor = floor_samples(redis_url, tmp, count)
    values = latency_stats(samples, 50, 99) | {
        "bots_running": len(bot_ids),
        "not_acked": refused,
        "patch_errors": errors,
        "over_1s": sum(1 for s in samples if s >= 1.0),
    }
    floor_stats = latency_stats(floor, 50, 99)
    r = ratio(values["p50_s"], floor_stats["p50_s"])
    return Figure(
        key="command_round_trip",
        title=f"Command round trip, PATCH config → acked, {len(bot_ids)} bots running",
        label=f"command round trip ({count} PATCHes, {len(bot_ids)} bots running)",
        measured=(
            f"p50 {ms(values['p50_s'])}, p99 {ms(values['p99_s'])}, not acked {refused},"
            f" PATCH errors {sum(errors.values())}, {values['over_1s']} took ≥ 1 s"
        ),
        floor_text=(
            f"Redis publish → bare runtime → ack p50 {ms(floor_stats['p50_s'])},"
            f" p99 {ms(floor_stats['p99_s'])}"
        ),
        ratio_text=f"{r:.2f}x (p50)",
        values=values,
        floor={
            "what": "reconfigure published on Redis to a bare runtime, until its ack",
            **floor_stats,
        },
        ratio=r,
        ratio_of="p50 / floor p50",
        samples={"manager": samples, "floor": floor},
        notes="client-observed; the command's status is polled every 5 ms",
    )


class SimulatedBots:
    """Many bots without processes: one Redis connection subscribed to every bot's command
    channel, acking each command over HTTP with that bot's token, as the runtime does. Records
    when each ack was answered (the command is `acked` in the database by then)."""

    def __init__(self, callback_url: str, redis_url: str, tokens: dict[str, str]) -> None:
        self.callback_url, self.redis_url, self.tokens = callback_url, redis_url, tokens
        self.acked: dict[str, float] = {}
        self.failed_acks = 0
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> SimulatedBots:
        self._thread.start()
        if not self._ready.wait(60):
            raise TimeoutError("the simulated bots never subscribed")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def wait_ack(self, command_id: str, timeout: float) -> float | None:
        with self._cond:
            self._cond.wait_for(lambda: command_id in self.acked, timeout)
            return self.acked.get(command_id)

    async def _main(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.redis_url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        channels = [command_channel(bot_id) for bot_id in self.tokens]
        for start in range(0, len(channels), 500):
            await pubsub.subscribe(*channels[start : start + 500])
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=self.callback_url, limits=limits) as http:
            self._ready.set()
            pending: set[asyncio.Task[None]] = set()
            while not self._stop.is_set():
                message = await pubsub.get_message(timeout=0.2)
                if message is None:
                    continue
                task = asyncio.create_task(self._ack(http, message))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.wait(pending)
        await pubsub.aclose()
        await client.aclose()

    async def _ack(self, http: httpx.AsyncClient, message: dict[str, Any]) -> None:
        bot_id = message["channel"].decode().rsplit(":", 1)[1]
        command_id = json.loads(message["data"])["id"]
        response = await http.post(
            f"/internal/bots/{bot_id}/commands/{command_id}/ack",
            json={"ok": True},
            headers={"Authorization": f"Bearer {self.tokens[bot_id]}"},
        )
        with self._cond:
            if response.status_code == 200:
                self.acked.setdefault(command_id, time.perf_counter())
            else:
                self.failed_acks += 1
            self._cond.notify_all()


def simulated_samples(
    client: httpx.Client, simulated: SimulatedBots, count: int
) -> tuple[list[float], int, dict[str, int]]:
    """`count` round trips over the simulated bots, in turn: PATCH sent → ack answered."""
    return round_trips(
        client,
        list(simulated.tokens),
        count,
        lambda _bot_id, command_id: simulated.wait_ack(command_id, timeout=30),
    )


def measure_simulated(
    client: httpx.Client, callback_url: str, redis_url: str, tokens: dict[str, str], count: int
) -> Figure:
    """The round trip with `len(tokens)` simulated bots (figure 3b); its floor is figure 3's."""
    with SimulatedBots(callback_url, redis_url, tokens) as simulated:
        simulated_samples(client, simulated, 10)  # warm-up
        samples, lost, errors = simulated_samples(client, simulated, count)
    values = latency_stats(samples, 50, 99) | {
        "bots_simulated": len(tokens),
        "not_acked": lost,
        "patch_errors": errors,
        "failed_acks": simulated.failed_acks,
    }
    return Figure(
        key="command_round_trip_simulated",
        title=f"Command round trip, PATCH config → acked, {len(tokens):,} simulated bots",
        label=f"command round trip ({count} PATCHes, {len(tokens)} simulated bots)",
        measured=(
            f"p50 {ms(values['p50_s'])}, p99 {ms(values['p99_s'])}, not acked {lost},"
            f" PATCH errors {sum(errors.values())}"
        ),
        floor_text="see the round trip with running bots (Redis publish → runtime → ack)",
        ratio_text="",
        values=values,
        samples={"manager (simulated bots)": samples},
        notes="each simulated bot is a subscription on one Redis connection that acks over HTTP"
        " with the bot's token; timed from the PATCH to the ack's answer (no polling)",
    )

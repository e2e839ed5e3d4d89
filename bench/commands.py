"""Figure 3, command round trip: PATCH /bots/{id}/config → the command `acked`, with N bots
running, beside its floor.

The floor is the physical path without the manager: a reconfigure envelope published straight
on a bare runtime's Redis channel, timed until its ack reaches the stub receiver.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

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
from bot_runtime.protocol import sign_command, signing_key

POLL_S = 0.005  # how often the client looks at the command


def manager_samples(
    client: httpx.Client, bot_ids: list[str], count: int
) -> tuple[list[float], int, dict[str, int]]:
    """`count` round trips, round-robin over `bot_ids`: (seconds each, commands not acked,
    PATCH answers other than 202 by "status code")."""
    samples: list[float] = []
    refused = 0
    errors: dict[str, int] = {}
    for i in range(count):
        bot_id = bot_ids[i % len(bot_ids)]
        began = time.perf_counter()
        response = client.patch(f"/bots/{bot_id}/config", json={"config": {"n": i}})
        if response.status_code != 202:
            code = f"{response.status_code} {response.json().get('detail', {}).get('code', '')}"
            errors[code.strip()] = errors.get(code.strip(), 0) + 1
            continue
        command_id = response.json()["id"]
        deadline = time.monotonic() + 60
        while True:
            status = client.get(f"/bots/{bot_id}/commands/{command_id}").json()["status"]
            if status in ("acked", "failed", "expired") or time.monotonic() > deadline:
                break
            time.sleep(POLL_S)
        if status == "acked":
            samples.append(time.perf_counter() - began)
        else:
            refused += 1
    return samples, refused, errors


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

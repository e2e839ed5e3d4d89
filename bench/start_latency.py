"""Start latency of a backend: POST /bots → `active`, over N bots, one at a time.

Runs a real manager (PostgreSQL + Redis, as the tests do) and prints one summary line. Timings
are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from tests.support import Manager, RedisServer, running_manager, wait_for_status

RESULTS = Path(__file__).parent / "results"


def measure(manager: Manager, count: int) -> list[float]:
    _, client = manager.new_user(max_bots=count + 1)
    latencies = []
    for _ in range(count):
        began = time.perf_counter()
        bot = client.post("/bots", json={"bot": "demo"}).json()
        while client.get(f"/bots/{bot['id']}").json()["status"] != "active":
            time.sleep(0.005)
        latencies.append(time.perf_counter() - began)
        client.post(f"/bots/{bot['id']}/stop")
        wait_for_status(client, bot["id"], {"completed", "failed"})
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bots", type=int, default=20)
    parser.add_argument("--backend", choices=["process", "docker"], default="process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        redis_server = RedisServer(Path(tmp) / "redis")
        redis_server.start()
        try:
            with running_manager(Path(tmp), redis_server.url, backend=args.backend) as manager:
                latencies = measure(manager, args.bots)
        finally:
            redis_server.stop()
    ordered = sorted(latencies)
    result = {
        "figure": f"start_latency_{args.backend}",
        "bots": args.bots,
        "p50_s": statistics.median(ordered),
        "p95_s": ordered[max(0, round(0.95 * len(ordered)) - 1)],
        "min_s": ordered[0],
        "max_s": ordered[-1],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"start_latency_{args.backend}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"start latency ({args.backend} backend, {args.bots} bots):"
        f" p50 {result['p50_s'] * 1000:.0f} ms,"
        f" p95 {result['p95_s'] * 1000:.0f} ms, min {result['min_s'] * 1000:.0f} ms,"
        f" max {result['max_s'] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()

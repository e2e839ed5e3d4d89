"""`python -m bench` (what `make bench` runs): the whole benchmark suite, one summary line per
figure, then bench/results/latest.json, latest.md and latencies.png.

Figures (issue 8), each beside its floor measured in the same run:
1. start latency, process and Docker backends      (bench/start_latency.py)
2. burst of POSTs at once, process and Docker       (bench/burst.py)
3. command round trip with bots running              (bench/commands.py)
4. the manager under load: callbacks/s, GETs/s, p99  (bench/load.py)
5. memory: manager RSS by records, runtime per bot   (bench/memory.py)
6. the reconciler's tick, 10,000 / 100,000 records (bench/reconciler_tick.py), per database
9. fairness: a polite user's p99 during a flood      (bench/fairness.py)
10. telegram bots: updates answered per second       (bench/telegram.py)
11. containment: another user's p99 during attacks  (bench/containment.py)
12. the queue: 1,000 POSTs with queue: true, drain;  (bench/queue.py)
    how late the timers fire
13. the CLI: a simple command's answer time           (bench/cli.py)
14. bulk operations: 1,000 bots stopped in one call  (bench/bulk.py)

The services (PostgreSQL, a Docker Engine, the images) must be up: `make bench` starts them.
Timings are reported, never asserted; a figure that cannot be measured is reported as such and
the run exits non-zero. `--only` measures some phases and keeps the other figures of latest.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

from bench import (
    bulk,
    burst,
    cli,
    commands,
    containment,
    fairness,
    load,
    memory,
    queue,
    reconciler_tick,
    report,
    start_latency,
    telegram,
)
from bench.common import LOGS, RESULTS, Figure, bench_manager, machine_info, median, mib, stop_all
from tests.support import RedisServer

T = TypeVar("T")
FAMILIES = (
    "process", "docker", "load", "reconciler", "fairness", "telegram", "containment", "queue",
    "cli", "bulk",
)  # fmt: skip
ORDER = [
    "start_latency_process",
    "start_latency_docker",
    "burst_process",
    "burst_docker",
    "command_round_trip",
    "command_round_trip_simulated",
    "command_round_trip_simulated_sqlite",
    "manager_load",
    "manager_load_sqlite",
    "memory",
    "reconciler_tick",
    "reconciler_tick_sqlite",
    "fairness_flood",
    "containment",
    "telegram_updates",
    queue.KEY,
    queue.TIMERS_KEY,
    cli.KEY,
    bulk.KEY,
]


class Run:
    """Collects figures and failures; one figure's failure never stops the others."""

    def __init__(self) -> None:
        self.figures: dict[str, Figure] = {}
        self.failures: dict[str, str] = {}

    def attempt(self, key: str, fn: Callable[[], T]) -> T | None:
        log(f"measuring {key} ...")
        try:
            result = fn()
        except Exception as exc:
            traceback.print_exc()
            self.failures[key] = f"{type(exc).__name__}: {exc}"
            print(f"{key}: not measured ({self.failures[key]})", flush=True)
            return None
        for item in result if isinstance(result, tuple) else (result,):
            if isinstance(item, Figure):
                self.figures[item.key] = item.show()
        return result

    def ordered(self) -> list[Figure]:
        return [self.figures[k] for k in ORDER if k in self.figures]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def process_phase(
    run: Run, args: argparse.Namespace, tmp: Path, redis_url: str, mem: dict[str, Any]
) -> None:
    """Figures 1, 2, 3 on the process backend, and the runtime's memory per bot."""
    with bench_manager(tmp / "process", redis_url) as manager:
        run.attempt(
            "start_latency_process",
            lambda: start_latency.measure(manager, "process", redis_url, tmp, count=args.bots),
        )
        outcome = run.attempt(
            "burst_process",
            lambda: burst.measure(manager, "process", redis_url, tmp, count=args.burst_process),
        )
        if outcome is None:
            run.failures.setdefault("command_round_trip", "needs the process burst's bots")
            return
        _, active, client = outcome
        with closing(client):
            keep, rest = active[: args.command_bots], active[args.command_bots :]
            log(f"stopping {len(rest)} bots, keeping {len(keep)} running")
            stop_all(client, rest)
            run.attempt(
                "command_round_trip",
                lambda: commands.measure(client, keep, redis_url, tmp, count=args.commands),
            )
            mem["runtime_process"] = run.attempt(
                "memory_runtime_process", lambda: memory.process_runtime_memory(client, keep)
            )
            mem["python_floor"] = run.attempt("memory_bare_python", memory.bare_python_memory)
            assert manager.proc is not None
            mem["manager_with_real_bots"] = {
                "bots": len(keep),
                "rss_mib": mib(memory.rss_bytes(manager.proc.pid)),
            }
            log(f"stopping the {len(keep)} remaining bots")
            stop_all(client, keep)


def docker_phase(
    run: Run, args: argparse.Namespace, tmp: Path, redis_url: str, mem: dict[str, Any]
) -> None:
    """Figures 1 and 2 on the Docker backend, and the memory of a bot's container."""
    with bench_manager(tmp / "docker", redis_url, backend="docker") as manager:
        run.attempt(
            "start_latency_docker",
            lambda: start_latency.measure(manager, "docker", redis_url, tmp, count=args.bots),
        )
        outcome = run.attempt(
            "burst_docker",
            lambda: burst.measure(manager, "docker", redis_url, tmp, count=args.burst_docker),
        )
        if outcome is None:
            return
        _, active, client = outcome
        with closing(client):

            def containers() -> dict[str, Any]:
                refs = [client.get(f"/bots/{b}").json()["runtime_ref"] for b in active]
                usage = memory.docker_memory([r for r in refs if r])
                return {"containers": len(usage), "memory_mib": mib(median(usage))}

            mem["runtime_docker"] = run.attempt("memory_runtime_docker", containers)
            mem["container_floor"] = run.attempt(
                "memory_bare_container", memory.bare_container_memory
            )
            log(f"stopping the {len(active)} containers")
            stop_all(client, active)


def keep_previous(run: Run, path: Path = RESULTS / "latest.json") -> list[str]:
    """Figures of the last run that this partial run did not measure (nor fail to)."""
    try:
        previous = json.loads(path.read_text())["figures"]
    except (OSError, ValueError, KeyError):
        return []
    kept = []
    for key, data in previous.items():
        if key not in run.figures and key not in run.failures:
            run.figures[key] = Figure.from_json(key, data)
            kept.append(key)
    return kept


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", nargs="+", choices=FAMILIES, default=list(FAMILIES), help="run only these phases"
    )
    parser.add_argument("--bots", type=int, default=50, help="start latency samples per backend")
    parser.add_argument(
        "--burst-process",
        type=int,
        default=1000,
        help="POSTs at once (issue 16); the floor's runtimes are stopped before the manager's "
        "start, so the peak is N runtimes: N x a runtime's PSS must fit in memory",
    )
    parser.add_argument("--burst-docker", type=int, default=50)
    parser.add_argument("--command-bots", type=int, default=100, help="bots running for fig. 3")
    parser.add_argument("--commands", type=int, default=200, help="command round trips")
    parser.add_argument("--load-seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--fairness-seconds", type=float, default=20.0, help="each phase")
    parser.add_argument(
        "--containment-seconds", type=float, default=8.0, help="each attack of figure 11"
    )
    parser.add_argument("--telegram-bots", type=int, default=20, help="the telegram fleet")
    parser.add_argument("--queue-bots", type=int, default=1000, help="POSTs with the queue")
    parser.add_argument("--queue-limit", type=int, default=20, help="their user's limit")
    parser.add_argument(
        "--telegram-updates", type=int, default=300, help="one telegram bot's backlog"
    )
    args = parser.parse_args()

    began = time.perf_counter()
    machine = machine_info()
    run = Run()
    mem: dict[str, Any] = {}
    manager_rss: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="botfleet-bench-") as name:
        tmp = Path(name)
        redis_server = RedisServer(tmp / "redis")
        redis_server.start()
        try:
            if "process" in args.only:
                process_phase(run, args, tmp, redis_server.url, mem)
            if "docker" in args.only:
                docker_phase(run, args, tmp, redis_server.url, mem)
            if "load" in args.only:
                for database in load.DATABASES:
                    outcome = run.attempt(
                        load.key(database),
                        lambda database=database: load.run(
                            tmp,
                            redis_server.url,
                            connections=args.connections,
                            duration_s=args.load_seconds,
                            commands_count=args.commands,
                            database=database,
                        ),
                    )
                    if outcome is not None and database == "postgresql":
                        manager_rss = outcome[1]
            if "fairness" in args.only:
                run.attempt(
                    "fairness_flood",
                    "containment",
                    lambda: fairness.run(
                        tmp,
                        redis_server.url,
                        connections=args.connections,
                        duration_s=args.fairness_seconds,
                    ),
                )
            if "containment" in args.only:
                run.attempt(
                    "containment",
                    lambda: containment.run(
                        tmp, redis_server.url, seconds=args.containment_seconds
                    ),
                )
            if "telegram" in args.only:
                run.attempt(
                    "telegram_updates",
                    lambda: telegram.run(
                        tmp,
                        redis_server.url,
                        fleet=args.telegram_bots,
                        updates=args.telegram_updates,
                    ),
                )
            if "queue" in args.only:
                run.attempt(
                    queue.KEY,
                    lambda: queue.run(
                        tmp, redis_server.url, count=args.queue_bots, limit=args.queue_limit
                    ),
                )
            if "cli" in args.only:
                run.attempt(cli.KEY, lambda: cli.run(tmp, redis_server.url))
            if "bulk" in args.only:
                run.attempt(bulk.KEY, lambda: bulk.run(tmp, redis_server.url))
            if "reconciler" in args.only:
                for database in reconciler_tick.DATABASES:
                    run.attempt(
                        reconciler_tick.key(database),
                        lambda database=database: reconciler_tick.run(
                            tmp, redis_server.url, database=database, ticks=args.ticks
                        ),
                    )
        finally:
            redis_server.stop()
    if manager_rss or mem.get("runtime_process") or mem.get("runtime_docker"):
        figure = memory.figure(
            manager_rss,
            mem.get("runtime_process"),
            mem.get("python_floor"),
            mem.get("runtime_docker"),
            mem.get("container_floor"),
        )
        if with_bots := mem.get("manager_with_real_bots"):
            figure.values["manager_rss_with_real_process_bots"] = with_bots
        run.figures[figure.key] = figure.show()
    elapsed = time.perf_counter() - began
    if set(args.only) != set(FAMILIES):
        kept = keep_previous(run)
        log(f"partial run: kept {', '.join(kept) or 'no'} figures of the previous run")
    figures = run.ordered()
    chart = report.write_chart(figures)
    paths = [
        report.write_json(figures, run.failures, machine, elapsed),
        report.write_markdown(figures, run.failures, machine, chart),
    ] + ([chart] if chart else [])
    log(f"done in {elapsed / 60:.1f} min: " + ", ".join(str(p) for p in paths))
    log(f"the managers' logs are in {LOGS}")
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())

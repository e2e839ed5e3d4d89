"""Helpers shared by the benchmark families: statistics, a stub manager that timestamps runtime
callbacks (the floors' receiver), bare runtime spawns, fake bot rows, RSS readings.

Every figure is measured beside its physical floor in the same run; `Figure` carries both and
the ratio, and prints the one-line summary.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from botfleet.runtime.env import RuntimeEnv
from botfleet.runtime.protocol import command_channel
from tests.support import REPO, RUNTIME_IMAGE, Manager, running_manager

RESULTS = Path(__file__).parent / "results"
#: The managers' logs of the last run (outside the repository).
LOGS = Path(tempfile.gettempdir()) / "botfleet-bench-logs"

#: The manager's defaults for the intervals (the tests shorten them; a benchmark must not).
BENCH_ENV = {
    "BOTFLEET_HEARTBEAT_S": "10",
    "BOTFLEET_HEARTBEATS_MISSED": "3",
    "BOTFLEET_RECONCILE_INTERVAL_S": "5",
    "BOTFLEET_COMMAND_RETRY_S": "5",
    "BOTFLEET_LAUNCH_TIMEOUT_S": "60",
    "BOTFLEET_START_TIMEOUT_S": "120",
    "BOTFLEET_STOP_GRACE_S": "30",
    "BOTFLEET_LAUNCH_WORKERS": "16",
}
RUNTIME_HEARTBEAT_S = "10"
#: What the process backend hands down to a bot besides its own variables.
INHERITED_ENV = ("PATH", "PYTHONPATH", "HOME", "LANG")
TERMINAL = {"completed", "failed"}


# ---- statistics --------------------------------------------------------------------------------


def pct(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else math.nan


def ratio(value: float, floor: float) -> float:
    return value / floor if floor and not math.isnan(floor) else math.nan


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


@dataclass
class Figure:
    """One benchmark figure: its values, its floor's, the ratio, and a one-line summary."""

    key: str
    title: str
    label: str  # the summary line's head, e.g. "start latency [process] (50 bots)"
    measured: str  # the figure, in words
    floor_text: str  # its floor, in words
    ratio_text: str  # the ratio(s), in words
    values: dict[str, Any] = field(default_factory=dict)
    floor: dict[str, Any] = field(default_factory=dict)
    ratio: float | None = None
    ratio_of: str = ""  # what the ratio compares, e.g. "p50 / floor p50"
    samples: dict[str, list[float]] = field(default_factory=dict)  # for the chart, not the JSON
    notes: str = ""

    @property
    def summary(self) -> str:
        return f"{self.label}: {self.measured} | floor: {self.floor_text} | ratio {self.ratio_text}"

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "label": self.label,
            "measured": self.measured,
            "floor_text": self.floor_text,
            "ratio_text": self.ratio_text,
            "values": self.values,
            "floor": self.floor,
            "ratio": self.ratio,
            "ratio_of": self.ratio_of,
            "summary": self.summary,
            "notes": self.notes,
            "samples_s": self.samples,
        }

    @classmethod
    def from_json(cls, key: str, data: dict[str, Any]) -> Figure:
        """A figure kept in latest.json (a partial run keeps the figures it did not measure).
        Older files have only `summary`: "label: measured | floor: floor | ratio ratio"."""
        label, _, rest = data.get("summary", "").partition(": ")
        measured, _, rest = rest.partition(" | floor: ")
        floor_text, _, ratio_text = rest.partition(" | ratio ")
        return cls(
            key=key,
            title=data["title"],
            label=data.get("label", label),
            measured=data.get("measured", measured),
            floor_text=data.get("floor_text", floor_text),
            ratio_text=data.get("ratio_text", ratio_text),
            values=data.get("values", {}),
            floor=data.get("floor", {}),
            ratio=data.get("ratio"),
            ratio_of=data.get("ratio_of", ""),
            samples=data.get("samples_s", {}),
            notes=data.get("notes", ""),
        )

    def show(self) -> Figure:
        print(self.summary, flush=True)
        return self


def latency_stats(samples: list[float], *percentiles: int) -> dict[str, float]:
    """{"n", "p50_s", ... , "min_s", "max_s"} of a list of seconds."""
    stats: dict[str, float] = {"n": len(samples)}
    for q in percentiles:
        stats[f"p{q}_s"] = pct(samples, q)
    stats["min_s"] = min(samples) if samples else math.nan
    stats["max_s"] = max(samples) if samples else math.nan
    return stats


# ---- the floors' stub manager ------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a burst of runtimes calls back at once
    dropped = 0  # connections a runtime closed mid-answer (e.g. killed while leaving)

    def handle_error(self, request: Any, client_address: Any) -> None:
        type(self).dropped += 1


class CallbackReceiver:
    """A stub of the manager's runtime endpoints: timestamps (time.perf_counter) the first
    `started` callback of each bot and each command ack, answers pending commands with []."""

    _CALLBACK = re.compile(r"^/internal/bots/([^/]+)/callbacks$")
    _ACK = re.compile(r"^/internal/bots/([^/]+)/commands/([^/]+)/ack$")

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.acks: dict[str, float] = {}
        self.events: dict[str, list[str]] = {}
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as two writes: without this, Nagle's algorithm and the
            # client's delayed ACK would add ~40 ms to every answer on a kept-alive connection.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer([])

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                now = time.perf_counter()
                path = self.path.split("?", 1)[0]
                if match := receiver._CALLBACK.match(path):
                    receiver._record_event(match.group(1), body.get("event", ""), now)
                    self._answer({"status": "active", "changed": True})
                elif match := receiver._ACK.match(path):
                    receiver._record_ack(match.group(2), now)
                    self._answer({"id": match.group(2), "status": "acked"})
                else:
                    self._answer({})

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> CallbackReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _record_event(self, bot_id: str, event: str, at: float) -> None:
        with self._cond:
            self.events.setdefault(bot_id, []).append(event)
            if event == "started" and bot_id not in self.started:
                self.started[bot_id] = at
                self._cond.notify_all()

    def _record_ack(self, command_id: str, at: float) -> None:
        with self._cond:
            self.acks.setdefault(command_id, at)
            self._cond.notify_all()

    def wait_started(self, bot_ids: Iterable[str], timeout: float = 120) -> dict[str, float]:
        """The `started` times of all `bot_ids`; raises TimeoutError when one is missing."""
        wanted = set(bot_ids)
        with self._cond:
            if not self._cond.wait_for(lambda: wanted <= self.started.keys(), timeout):
                missing = len(wanted - self.started.keys())
                raise TimeoutError(f"{missing} floor bot(s) never called back `started`")
            return {b: self.started[b] for b in wanted}

    def wait_ack(self, command_id: str, timeout: float) -> float | None:
        with self._cond:
            self._cond.wait_for(lambda: command_id in self.acks, timeout)
            return self.acks.get(command_id)


def floor_token(bot_id: str) -> str:
    """A bare runtime's token: the stub receiver accepts any, and the floor signs its Redis
    messages with its digest, as the manager does (runtime/protocol.py)."""
    return "bft_floor_" + bot_id


def runtime_env(bot_id: str, callback_url: str, redis_url: str) -> dict[str, str]:
    """The runtime environment (runtime/env.py) of a `demo` bot, as the manager hands it."""
    rendered = RuntimeEnv(
        bot_id=bot_id,
        token=floor_token(bot_id),
        callback_url=callback_url,
        redis_url=redis_url,
        command_channel=command_channel(bot_id),
        bot="demo",
        heartbeat_s=float(RUNTIME_HEARTBEAT_S),
    ).render()
    return rendered.env | rendered.secret_env


def spawn_bare_runtime(
    bot_id: str, callback_url: str, redis_url: str, log_dir: Path
) -> subprocess.Popen[bytes]:
    """`python -m botfleet.runtime` started as the process backend does, minus the manager."""
    env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    env |= runtime_env(bot_id, callback_url, redis_url)
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / f"{bot_id}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "botfleet.runtime"],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """SIGTERM (the runtime leaves), then SIGKILL whatever is still there after `timeout`."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            with _suppress_lookup():
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with _suppress_lookup():
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _suppress_lookup() -> suppress:
    return suppress(ProcessLookupError)


FLOOR_LABEL = "botfleet.bench=floor"


def docker_run_bare(bot_id: str, callback_url: str, redis_url: str) -> subprocess.Popen[bytes]:
    """A bare `docker run --rm --network host` of the runtime image (detached, so the CLI returns
    once the container is started; the callback marks the end of the measurement)."""
    args = ["docker", "run", "--rm", "--detach", "--network", "host", "--label", FLOOR_LABEL]
    args += ["--name", f"bf-bench-floor-{bot_id}"]
    for key, value in runtime_env(bot_id, callback_url, redis_url).items():
        args += ["-e", f"{key}={value}"]
    args.append(RUNTIME_IMAGE)
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def remove_floor_containers() -> None:
    """Stop (SIGTERM, the runtime leaves; --rm removes) every floor container of the bench."""
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={FLOOR_LABEL}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "stop", "-t", "10", *ids], capture_output=True, check=False)
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)


# ---- the manager under test --------------------------------------------------------------------


@contextmanager
def bench_manager(
    root: Path, redis_url: str, *, backend: str = "process", extra: dict[str, str] | None = None
) -> Iterator[Manager]:
    """A real manager process (PostgreSQL, the given Redis) with the default intervals; its
    bots are killed and its database dropped at the end."""
    env = BENCH_ENV | (extra or {})
    with running_manager(root, redis_url, backend=backend, extra_env=env) as manager:
        try:
            yield manager
        finally:
            manager.stop()
            LOGS.mkdir(parents=True, exist_ok=True)
            with suppress(OSError):
                shutil.copy(manager.log_path, LOGS / f"manager-{root.name}.log")


def poll_until(
    client: httpx.Client, bot_id: str, wanted: set[str], *, interval: float, timeout: float
) -> tuple[float, dict[str, Any]]:
    """perf_counter() when GET /bots/{id} first shows a status in `wanted`, and the bot."""
    deadline = time.monotonic() + timeout
    while True:
        bot = client.get(f"/bots/{bot_id}").json()
        if bot.get("status") in wanted:
            return time.perf_counter(), bot
        if time.monotonic() > deadline:
            raise TimeoutError(f"bot {bot_id} not in {wanted} after {timeout}s: {bot}")
        time.sleep(interval)


def list_all(client: httpx.Client, **params: str) -> list[dict[str, Any]]:
    """Every bot of the caller matching `params`, following cursors."""
    bots: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {"limit": "500", **params} | ({"cursor": cursor} if cursor else {})
        page = client.get("/bots", params=query).json()
        items = page["items"] if isinstance(page, dict) else page
        bots.extend(items)
        cursor = page.get("next_cursor") if isinstance(page, dict) else None
        if not cursor:
            return bots


def stop_all(client: httpx.Client, bot_ids: Iterable[str], *, timeout: float = 180) -> float:
    """Ask every bot to stop and wait until all have ended; the seconds that took."""
    ids = list(bot_ids)
    began = time.perf_counter()
    for bot_id in ids:
        client.post(f"/bots/{bot_id}/stop")
    pending = set(ids)
    deadline = time.monotonic() + timeout
    while pending:
        ended = {b["id"] for b in list_all(client) if b["status"] in TERMINAL}
        pending -= ended
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} bot(s) did not end within {timeout}s")
        if pending:
            time.sleep(0.5)
    return time.perf_counter() - began


# ---- memory -----------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def mib(n: float) -> float:
    return n / (1024 * 1024)


# ---- fake bot rows ----------------------------------------------------------------------------


def insert_bots(
    database_url: str,
    user_id: str,
    rows: list[dict[str, Any]],
    *,
    orchestrator: str = "process",
) -> None:
    """Insert bot rows directly (no workloads), with the columns the API would have filled."""
    from sqlalchemy import insert

    from botfleet.manager.core.db import make_engine
    from botfleet.manager.core.models import Bot, new_id, utcnow

    now = utcnow()
    base = {
        "user_id": user_id,
        "orchestrator": orchestrator,
        "bot": "demo",
        "config": {},
        "config_version": 1,
        "labels": {},
        "attempt": 1,
        "restart_max_retries": 0,
        "restart_backoff_s": 5.0,
        "created_at": now,
        "updated_at": now,
        "status_reason": None,
        "runtime_ref": None,
        "token_hash": None,
        "started_at": None,
        "active_at": None,
        "ended_at": None,
        "last_heartbeat_at": None,
        "stop_requested_at": None,
        "exit_code": None,
    }
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            for start in range(0, len(rows), 2000):
                chunk = [base | {"id": new_id()} | row for row in rows[start : start + 2000]]
                conn.execute(insert(Bot), chunk)
    finally:
        engine.dispose()


def active_rows(count: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """`count` active bot rows with fresh heartbeats and known tokens: (rows, {bot_id: token})."""
    from botfleet.manager.core.models import new_id, utcnow
    from botfleet.manager.core.secrets import BOT_TOKEN_PREFIX, digest, new_secret

    now = utcnow()
    rows, tokens = [], {}
    for _ in range(count):
        bot_id, token = new_id(), new_secret(BOT_TOKEN_PREFIX)
        tokens[bot_id] = token
        rows.append(
            {
                "id": bot_id,
                "status": "active",
                "status_reason": "started",
                "token_hash": digest(token),
                "started_at": now,
                "active_at": now,
                "last_heartbeat_at": now,
            }
        )
    return rows, tokens


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, memory, Python, engine versions and the date of the run."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass

    def version(*cmd: str) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
            return out.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "platform": sys.platform,
        "docker": version("docker", "version", "--format", "{{.Server.Version}}"),
        "postgresql": version("psql", "--version"),
        "redis": version("redis-server", "--version"),
    }

"""Figure 5, memory: the manager's RSS with 0, 200 and 1,000 active bot records, and the
runtime's memory per bot (process: VmRSS and PSS from /proc; Docker: the container's cgroup
usage from `docker stats`).

Floors: the manager's own RSS with no records (what each record adds is the figure), and for
the runtime a bare idle Python interpreter (process) or the same image idling (Docker).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import FLOOR_LABEL, Figure, median, mib, ratio, rss_bytes
from tests.support import RUNTIME_IMAGE


def pss_bytes(pid: int) -> int | None:
    """Proportional set size (shared pages split among their users), or None if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def process_bot_pids(client: httpx.Client, bot_ids: list[str]) -> list[int]:
    """Pids of running process-backend bots (their runtime_ref is `<pid>-<start time>`)."""
    pids = []
    for bot_id in bot_ids:
        ref = client.get(f"/bots/{bot_id}").json().get("runtime_ref") or ""
        pid = ref.split("-")[0]
        if pid.isdigit() and Path(f"/proc/{pid}").exists():
            pids.append(int(pid))
    return pids


def process_runtime_memory(client: httpx.Client, bot_ids: list[str]) -> dict[str, Any]:
    """Median VmRSS and PSS of the running bot processes."""
    pids = process_bot_pids(client, bot_ids)
    rss = [rss_bytes(p) for p in pids]
    pss = [v for p in pids if (v := pss_bytes(p)) is not None]
    return {
        "bots": len(pids),
        "rss_mib": mib(median(rss)),
        "pss_mib": mib(median(pss)) if pss else None,
    }


def bare_python_memory() -> dict[str, Any]:
    """VmRSS and PSS of an idle bare interpreter (`python -c 'sleep'`): the process floor."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        time.sleep(1.0)
        return {"rss_mib": mib(rss_bytes(proc.pid)), "pss_mib": mib(pss_bytes(proc.pid) or 0)}
    finally:
        proc.kill()
        proc.wait()


_SIZE = re.compile(r"^([\d.]+)\s*([KMGT]?i?B)$")
_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "kB": 1000, "MB": 1e6, "GB": 1e9}


def _parse_size(text: str) -> float:
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError(f"cannot parse a size from {text!r}")
    return float(match.group(1)) * _UNITS.get(match.group(2), 1)


def docker_memory(container_ids: list[str]) -> list[float]:
    """Memory usage (bytes, the cgroup's) of containers, from `docker stats --no-stream`."""
    if not container_ids:
        return []
    out = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", *container_ids],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return [_parse_size(line.split("/")[0]) for line in out.splitlines() if line.strip()]


def bare_container_memory() -> dict[str, Any]:
    """The same image running an idle interpreter instead of the runtime: the Docker floor."""
    name = "bf-bench-floor-idle"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--rm",
            "--network",
            "host",
            "--label",
            FLOOR_LABEL,
            "--name",
            name,
            "--entrypoint",
            "python",
            RUNTIME_IMAGE,
            "-c",
            "import time; time.sleep(600)",
        ],
        capture_output=True,
        check=True,
    )
    try:
        time.sleep(1.5)
        return {"memory_mib": mib(docker_memory([name])[0])}
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def figure(
    manager_rss: dict[str, float],
    runtime_process: dict[str, Any] | None,
    python_floor: dict[str, Any] | None,
    runtime_docker: dict[str, Any] | None,
    container_floor: dict[str, Any] | None,
) -> Figure:
    """Combine the readings into figure 5."""
    base = manager_rss.get("0")
    most = max((int(k) for k in manager_rss if k.isdigit()), default=0)
    top = manager_rss.get(str(most)) if most else None
    per_record_kib = (top - base) * 1024 / most if base is not None and top is not None else None
    values: dict[str, Any] = {
        "manager_rss_mib": manager_rss,
        "manager_kib_per_record": per_record_kib,
        "runtime_process": runtime_process,
        "runtime_docker": runtime_docker,
    }
    floor = {
        "what": "manager: its own RSS with 0 records; runtime: an idle bare interpreter "
        "(process) / the same image running an idle interpreter (Docker)",
        "manager_rss_0_mib": base,
        "bare_python": python_floor,
        "bare_container": container_floor,
    }
    r = ratio(top, base) if base is not None and top is not None else None
    measured = [
        "manager RSS "
        + ", ".join(f"{v:.0f} MiB ({k} records)" for k, v in manager_rss.items() if k.isdigit())
    ]
    floors = [f"manager with 0 records {base:.0f} MiB" if base is not None else "manager: n/a"]
    ratios = [
        f"{r:.2f}x (manager {most:,}/0 records, {per_record_kib:.1f} KiB/record)"
        if r is not None and per_record_kib is not None
        else "manager n/a"
    ]
    if runtime_process and python_floor:
        pr = ratio(runtime_process["rss_mib"], python_floor["rss_mib"])
        values["runtime_process_ratio"] = pr
        pss = runtime_process.get("pss_mib")
        measured.append(
            f"runtime per bot process RSS {runtime_process['rss_mib']:.1f} MiB"
            + (f" (PSS {pss:.1f} MiB)" if pss else "")
        )
        floors.append(f"bare python RSS {python_floor['rss_mib']:.1f} MiB")
        ratios.append(f"{pr:.1f}x (runtime RSS / bare python)")
    if runtime_docker and container_floor:
        dr = ratio(runtime_docker["memory_mib"], container_floor["memory_mib"])
        values["runtime_docker_ratio"] = dr
        measured.append(f"per container {runtime_docker['memory_mib']:.1f} MiB")
        floors.append(f"idle container {container_floor['memory_mib']:.1f} MiB")
        ratios.append(f"{dr:.1f}x (container / idle container)")
    return Figure(
        key="memory",
        title="Memory: manager RSS by active records; runtime per bot",
        label="memory",
        measured="; ".join(measured),
        floor_text="; ".join(floors),
        ratio_text="; ".join(ratios),
        values=values,
        floor=floor,
        ratio=r,
        ratio_of="manager RSS with the most records / with 0",
        notes="records are inserted rows (no workloads), each touched by a heartbeat and a GET "
        "and seen by a reconciler tick before the reading",
    )

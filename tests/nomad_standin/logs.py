"""The allocation's task logs (`GET /v1/client/fs/logs/:alloc_id`), read from its log files.

Only `plain=true` without `follow` is emulated: it is all the nomad backend asks for. One file per
stream (`<task>.<type>.0`, never rotated); its bytes are answered as they are, so offsets count
the same bytes as Nomad's, under `Content-Type: text/plain` without a charset, as Nomad sends
them (command/agent/fs_endpoint.go): a client that guesses the charset from the answer decodes
UTF-8 as ISO-8859-1. A task that never started answers 404 "task ... not started yet. No logs
available" (client/fs_endpoint.go), as does an allocation its client collected.
"""

from __future__ import annotations

from tests.nomad_standin.state import ApiError, Cluster, parse_bool


def read_logs(cluster: Cluster, alloc_id: str, query: dict[str, str]) -> bytes:
    """Stream Logs with `plain=true` and no `follow`: the bytes from `origin` and `offset`."""
    with cluster.lock:
        alloc = cluster.get_alloc(alloc_id)
    task = query.get("task")
    if not task:
        raise ApiError(400, "must provide task name")
    if task != alloc.task["Name"]:
        raise ApiError(400, f"unknown task name {task!r}")
    kind = query.get("type")
    if kind not in ("stdout", "stderr"):
        raise ApiError(400, "must provide log type (stdout/stderr)")
    if not parse_bool(query.get("plain"), "plain") or parse_bool(query.get("follow"), "follow"):
        raise ApiError(400, "stand-in: only plain=true without follow is emulated")
    origin = query.get("origin") or "start"
    if origin not in ("start", "end"):
        raise ApiError(400, 'origin must be "start" or "end"')
    try:
        offset = int(query.get("offset") or 0)
    except ValueError:
        raise ApiError(400, "failed to parse offset") from None
    if alloc.started_at is None:  # client/fs_endpoint.go: TaskState.StartedAt is zero
        raise ApiError(404, f'task "{task}" not started yet. No logs available')
    path = alloc.dir / "alloc" / "logs" / f"{task}.{kind}.0"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return b""
    start = max(0, len(data) - offset) if origin == "end" else min(offset, len(data))
    return data[start:]


# ---- variables ---------------------------------------------------------------------------

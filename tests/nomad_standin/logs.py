"""The allocation's task logs (`GET /v1/client/fs/logs/:alloc_id`), read from its log files.

Without `follow` only. One file per stream (`<task>.<type>.0`, never rotated); offsets count its
bytes as Nomad's do. `plain=true` answers the bytes as they are, under `Content-Type:
text/plain` without a charset (command/agent/fs_endpoint.go `Logs`); otherwise the answer is a
run of JSON frames (client/lib/streamframer/framer.go `StreamFrame`: `Offset`, `Data` in base64,
`File`), at most 64 KiB of data each (client/fs_endpoint.go `streamFrameSize`), under
`application/json`.

Errors as Nomad words them: a task that never started answers 404 "task ... not started yet. No
logs available" (client/fs_endpoint.go `logs`); an allocation whose node the servers cannot
reach (down, cut off) 404 "No path to node" (nomad/client_fs_endpoint.go `logs`,
command/agent/fs_endpoint.go); one its client collected 404 "Unknown allocation" (client
`getAllocRunner`). An error after the stream began comes after the frames already sent, in the
200 answer (`fsStreamImpl` returns it, command/agent/http.go `wrap` writes it): `Alloc.log_error`
makes the next read do that.
"""

from __future__ import annotations

import base64
import json

from tests.nomad_standin.state import ApiError, Cluster, parse_bool

#: client/fs_endpoint.go, streamFrameSize.
FRAME_BYTES = 64 * 1024


class StreamFailed(Exception):
    """A 200 answer whose stream failed: `sent` went out, then the error text."""

    def __init__(self, sent: bytes, error: str) -> None:
        super().__init__(error)
        self.sent, self.error = sent, error


def frames(data: bytes, *, offset: int, file: str) -> bytes:
    """`data` as Nomad's JSON frames (go-codec writes them back to back, no separator)."""
    out = b""
    for at in range(0, len(data), FRAME_BYTES):
        frame = {
            "Offset": offset + at + len(data[at : at + FRAME_BYTES]),
            "Data": base64.b64encode(data[at : at + FRAME_BYTES]).decode(),
            "File": file,
        }
        out += json.dumps(frame, separators=(",", ":")).encode()
    return out


def read_logs(cluster: Cluster, alloc_id: str, query: dict[str, str]) -> tuple[bytes, str]:
    """Stream Logs without `follow`: the bytes from `origin` and `offset`, plain or framed, and
    the answer's content type. StreamFailed when a test broke the stream."""
    with cluster.lock:
        alloc = cluster.get_alloc(alloc_id)
        partitioned, collected = alloc.partitioned, alloc.collected
        log_error, alloc.log_error = alloc.log_error, None
    task = query.get("task")
    if not task:
        raise ApiError(400, "must provide task name")
    kind = query.get("type")
    if kind not in ("stdout", "stderr"):
        raise ApiError(400, "must provide log type (stdout/stderr)")
    if parse_bool(query.get("follow"), "follow"):
        raise ApiError(400, "stand-in: follow is not emulated")
    plain = parse_bool(query.get("plain"), "plain")
    origin = query.get("origin") or "start"
    if origin not in ("start", "end"):
        raise ApiError(400, "origin must be start or end")
    try:
        offset = int(query.get("offset") or 0)
    except ValueError:
        raise ApiError(400, "error parsing offset") from None
    if partitioned:  # nomad/client_fs_endpoint.go: no server has a connection to the node
        raise ApiError(404, "No path to node")
    if collected:  # client/fs_endpoint.go: the client has no runner for it any more
        raise ApiError(404, f'Unknown allocation "{alloc_id}"')
    if task != alloc.task["Name"]:
        raise ApiError(400, f"unknown task name {task!r}")
    if alloc.started_at is None:  # client/fs_endpoint.go: TaskState.StartedAt is zero
        raise ApiError(404, f'task "{task}" not started yet. No logs available')
    name = f"{task}.{kind}.0"
    try:
        data = (alloc.dir / "alloc" / "logs" / name).read_bytes()
    except FileNotFoundError:
        data = b""
    start = max(0, len(data) - offset) if origin == "end" else min(offset, len(data))
    data = data[start:]
    file = f"alloc/logs/{name}"
    if log_error is not None:  # the first frame goes out, then the stream fails
        first = data[:FRAME_BYTES]
        raise StreamFailed(first if plain else frames(first, offset=start, file=file), log_error)
    if plain:
        return data, "text/plain"
    return frames(data, offset=start, file=file), "application/json"

"""Issue 15 item 1: a bot's logs are bounded (tail, lines, files), rotated and followed.

The process backend writes `DATA_DIR/logs/<bot>.log`; the attacks append to that file directly
(as a bot printing without end would) and check what a user gets back.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import (
    REPO,
    Manager,
    RedisServer,
    running_manager,
    user_env,
    wait_for_status,
    wait_until,
)

MIB = 1 << 20
LINE_MAX = 16_384
FILE_MAX = 65_536
FILES = 3
STREAMS = 2
#: Rotation waits (64 MiB) so the huge log below stays whole; `rotating` rotates at 64 KiB.
MANAGER_ENV = {
    "BOTFLEET_LOG_FILE_MAX_BYTES": str(64 * 1 << 20),
    "BOTFLEET_MAX_STREAMS_PER_KEY": str(STREAMS),
}


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("logs")
    with running_manager(root, redis_server.url, extra_env=MANAGER_ENV) as instance:
        yield instance


@pytest.fixture
def rotating(tmp_path: Path, redis_server: RedisServer) -> Iterator[Manager]:
    env = {"BOTFLEET_LOG_FILE_MAX_BYTES": str(FILE_MAX), "BOTFLEET_LOG_FILES": str(FILES)}
    with running_manager(tmp_path, redis_server.url, extra_env=env) as instance:
        yield instance


def _active_bot(client: httpx.Client) -> str:
    created = client.post("/bots", json={"bot": "demo", "config": {}})
    assert created.status_code == 201, created.text
    bot_id = created.json()["id"]
    wait_for_status(client, bot_id, {"active"})
    return str(bot_id)


def _log(manager: Manager, bot_id: str) -> Path:
    return manager.data_dir / "logs" / f"{bot_id}.log"


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


# ---- the shared caps -------------------------------------------------------------------------


# ---- the API, on the process backend ---------------------------------------------------------


def test_tail_of_a_huge_log_answers_within_the_caps(manager: Manager) -> None:
    _, client = manager.new_user()
    bot_id = _active_bot(client)
    path = _log(manager, bot_id)
    _append(path, b"filler line\n" * (8 * MIB // 12))  # ~8 MiB of ordinary lines
    _append(path, b"L" * (16 * 1000 * 1000) + b"\n")  # one 16 MB line
    _append(path, b"".join(b"tail line %d\n" % i for i in range(49)))
    assert path.stat().st_size > 24 * 1000 * 1000

    answer = client.get(f"/bots/{bot_id}/logs", params={"tail": 50})
    assert answer.status_code == 200
    body = answer.content
    assert len(body) <= MIB, f"answered {len(body)} bytes"
    lines = body.split(b"\n")
    assert len(lines) <= 50 and all(len(line) <= LINE_MAX for line in lines)
    assert lines[-1] == b"tail line 48"
    # It began long before the bytes read: its end, after the marker.
    long_line = next(line for line in lines if b"LLLL" in line)
    assert long_line.startswith("[truncated] …".encode()) and len(long_line) <= LINE_MAX
    too_many = client.get(f"/bots/{bot_id}/logs", params={"tail": 10_001})
    assert too_many.status_code == 422
    client.post(f"/bots/{bot_id}/stop")


def test_housekeeping_rotates_the_log_and_the_bot_keeps_appending(rotating: Manager) -> None:
    manager = rotating
    _, client = manager.new_user()
    bot_id = _active_bot(client)
    path = _log(manager, bot_id)
    for round_ in range(3):  # three rotations: the oldest file falls off
        _append(path, b"".join(b"round %d line %06d\n" % (round_, i) for i in range(20_000)))
        wait_until(lambda: path.stat().st_size < FILE_MAX, timeout=20, what="log rotated")
    files = sorted(path.parent.glob(f"{bot_id}.log*"))
    assert [f.name for f in files] == [f"{bot_id}.log", f"{bot_id}.log.1", f"{bot_id}.log.2"]
    assert sum(f.stat().st_size for f in files) <= FILE_MAX * FILES
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    # The bot's descriptor is O_APPEND: its next line lands at the new end, not past a hole.
    patched = client.patch(f"/bots/{bot_id}/config", json={"config": {"mark": "after-rotation"}})
    assert patched.status_code == 202
    wait_until(lambda: b"after-rotation" in path.read_bytes(), timeout=20, what="bot output")
    assert path.stat().st_size < FILE_MAX and b"\0" not in path.read_bytes()
    # The tail reads across the rotated files.
    tail = client.get(f"/bots/{bot_id}/logs", params={"tail": 10_000}).text
    assert "round 2 line 019999" in tail and "after-rotation" in tail
    client.post(f"/bots/{bot_id}/stop")


def _follow_into(client: httpx.Client, bot_id: str, lines: queue.Queue[str | None]) -> None:
    with client.stream(
        "GET",
        f"/bots/{bot_id}/logs",
        params={"tail": 5, "follow": 1},
        timeout=httpx.Timeout(10, read=60),
    ) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            lines.put(line)
    lines.put(None)  # the stream ended


def _next_matching(lines: queue.Queue[str | None], needle: str, timeout: float = 20) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None or needle in line:
            return line
    raise AssertionError(f"{needle!r} never arrived")


def test_follow_streams_new_output_and_ends_with_the_bot(manager: Manager) -> None:
    _, client = manager.new_user()
    bot_id = _active_bot(client)
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_follow_into, args=(client, bot_id, lines), daemon=True)
    reader.start()
    assert _next_matching(lines, "started") is not None  # the tail comes first
    marker = uuid.uuid4().hex
    # Printed by the bot itself after the stream began.
    client.patch(f"/bots/{bot_id}/config", json={"config": {"mark": marker}})
    assert marker in (_next_matching(lines, marker) or "")
    _append(_log(manager, bot_id), b"M" * 100_000 + b"\n")  # a long line arrives cut
    long_line = _next_matching(lines, "MMMM") or ""
    assert len(long_line.encode()) <= LINE_MAX and "[truncated " in long_line
    client.post(f"/bots/{bot_id}/stop")
    assert _next_matching(lines, "\0never\0", timeout=30) is None, "the stream must end"
    reader.join(5)
    assert not reader.is_alive()


def test_one_key_holds_at_most_n_follow_streams(manager: Manager) -> None:
    _, client = manager.new_user()
    bot_id = _active_bot(client)
    url, params = f"/bots/{bot_id}/logs", {"follow": "1", "tail": 1}
    with (
        client.stream("GET", url, params=params) as first,
        client.stream("GET", url, params=params) as second,
    ):
        assert first.status_code == second.status_code == 200
        refused = client.get(url, params=params)
        assert refused.status_code == 429
        assert refused.json()["detail"]["code"] == "too_many_streams"
        # Plain tails are not streams: still answered.
        assert client.get(url, params={"tail": 1}).status_code == 200
        # Another key is not affected.
        _, other = manager.new_user()
        other_bot = _active_bot(other)
        with other.stream("GET", f"/bots/{other_bot}/logs", params=params) as theirs:
            assert theirs.status_code == 200
        other.post(f"/bots/{other_bot}/stop")
    # Closed streams give their slots back.
    wait_until(lambda: _stream_status(client, url, params) == 200, timeout=10, what="slot released")
    client.post(f"/bots/{bot_id}/stop")


def _stream_status(client: httpx.Client, url: str, params: dict[str, object]) -> int:
    with client.stream("GET", url, params=params) as resp:
        return resp.status_code


def test_cli_follows_without_polling(manager: Manager) -> None:
    user, client = manager.new_user()
    bot_id = _active_bot(client)
    env = user_env(BOTFLEET_URL=manager.url, BOTFLEET_KEY=user["api_key"])
    env["BOTFLEET_CONFIG"] = str(manager.data_dir / "absent.toml")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("botfleet")), "bots", "logs", bot_id, "-f", "-n", "5"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
        assert first, proc.stderr.read() if proc.stderr else ""
        marker = uuid.uuid4().hex
        client.patch(f"/bots/{bot_id}/config", json={"config": {"mark": marker}})
        seen = ""
        while marker not in seen:
            line = proc.stdout.readline().decode()
            assert line, "the CLI stopped before the new line"
            seen += line
        # It holds one of the key's streams (a polling CLI would hold none).
        url, params = f"/bots/{bot_id}/logs", {"follow": "1", "tail": 1}
        with client.stream("GET", url, params=params) as second:
            assert second.status_code == 200
            refused = client.get(url, params=params)
            assert refused.status_code == 429, "the CLI should hold a stream"
        client.post(f"/bots/{bot_id}/stop")
        assert proc.wait(30) == 0  # the stream ends with the bot, and so does the CLI
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

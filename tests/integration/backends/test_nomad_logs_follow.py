"""Issue 15 item 1 on Nomad: `GET /bots/{id}/logs?follow=1` streams what the bot writes next.

The nomad backend polls Stream Logs from byte offsets (orchestrators/nomad/logs.py). Through a
real manager and the stand-in (tests/nomad_standin/, not Nomad): a line the bot prints after the
stream began arrives, and the stream ends with the bot. Against the stand-in alone: a follower
starts at the end of a big log without answering it, never repeats nor loses a byte, keeps lines
whole, decodes as UTF-8, and survives a log that shrank under it.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from botfleet.orchestrators import LaunchSpec
from botfleet.orchestrators.base import LogFollower, WorkloadState
from botfleet.orchestrators.nomad import NomadOrchestrator, NomadOrchestratorConfig
from botfleet.orchestrators.nomad.logs import SKIPPED
from tests.nomad_standin import StandIn
from tests.support import Manager, RedisServer, running_manager, wait_for_status, wait_until

TOKEN = "nomad-acl-token-for-follow-tests"
NAMESPACE = "botfleet"
SLEEPER = "import time; print('up', flush=True); time.sleep(60)"


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    server = StandIn(
        tmp_path_factory.mktemp("nomad"), token=TOKEN, namespace=NAMESPACE, datacenter="dc-test"
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def manager(
    standin: StandIn, tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    extra_env = {
        "BOTFLEET_NOMAD_ADDRESS": standin.url,
        "BOTFLEET_NOMAD_TOKEN": TOKEN,
        "BOTFLEET_NOMAD_NAMESPACE": NAMESPACE,
        "BOTFLEET_NOMAD_DATACENTERS": '["dc-test"]',
        "BOTFLEET_NOMAD_DRIVER": "raw_exec",
        "BOTFLEET_NOMAD_COMMAND": json.dumps([sys.executable, "-m", "botfleet.runtime"]),
    }
    root = tmp_path_factory.mktemp("nomad-follow-manager")
    with running_manager(root, redis_server.url, backend="nomad", extra_env=extra_env) as instance:
        yield instance


def _stdout(standin: StandIn, job_id: str) -> Path:
    alloc = standin.alloc_of(job_id)
    assert alloc is not None, f"job {job_id} has no allocation"
    return alloc.dir / "alloc" / "logs" / "bot.stdout.0"


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


# ---- through the manager ----------------------------------------------------------------------


def _follow_into(client: httpx.Client, bot_id: str, lines: queue.Queue[str | None]) -> None:
    with client.stream(
        "GET",
        f"/bots/{bot_id}/logs",
        params={"tail": 5, "follow": 1},
        timeout=httpx.Timeout(10, read=60),
    ) as resp:
        lines.put(f"status {resp.status_code}")
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


def test_follow_streams_what_the_bot_prints_next_and_ends_with_it(
    manager: Manager, standin: StandIn
) -> None:
    _, client = manager.new_user()
    bot_id = client.post("/bots", json={"bot": "demo", "config": {}}).json()["id"]
    job_id = wait_for_status(client, bot_id, {"active"})["runtime_ref"]
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_follow_into, args=(client, bot_id, lines), daemon=True)
    reader.start()
    assert lines.get(timeout=20) == "status 200", "Nomad follows (it answered 501 before)"
    assert _next_matching(lines, "started") is not None  # the tail comes first

    marker = uuid.uuid4().hex
    # Printed by the bot itself after the stream began.
    client.patch(f"/bots/{bot_id}/config", json={"config": {"mark": marker}})
    assert marker in (_next_matching(lines, marker) or "")
    # Bytes, decoded as UTF-8 (invalid ones replaced), and offsets that count bytes: the line
    # after an invalid byte arrives whole.
    _append(_stdout(standin, job_id), b"caf\xc3\xa9 \xff end\nnext line\n")
    assert _next_matching(lines, "caf") == "café \ufffd end"
    assert lines.get(timeout=5) == "next line"

    client.post(f"/bots/{bot_id}/stop")
    assert _next_matching(lines, "\0never\0", timeout=30) is None, "the stream must end"
    reader.join(5)
    assert not reader.is_alive()
    assert wait_for_status(client, bot_id, {"completed", "failed"})["status"] == "completed"


def test_logs_on_a_node_nomad_cannot_reach_are_an_error_not_an_empty_log(
    manager: Manager, standin: StandIn
) -> None:
    """Issue 31, 4b. Logs of an allocation whose node is down answer 404 "No path to node"
    (nomad/client_fs_endpoint.go `logs`, command/agent/fs_endpoint.go): the user is told the
    node cannot be reached (503 `node_unreachable`), tail or follow, never shown an empty log."""
    _, client = manager.new_user()
    bot_id = client.post("/bots", json={"bot": "demo", "config": {}}).json()["id"]
    job_id = wait_for_status(client, bot_id, {"active"})["runtime_ref"]
    wait_until(lambda: "started" in client.get(f"/bots/{bot_id}/logs").text, timeout=10)
    standin.disconnect(job_id)
    for params in ({"tail": 5}, {"tail": 5, "follow": 1}):
        answer = client.get(f"/bots/{bot_id}/logs", params=params)
        assert answer.status_code == 503, answer.text
        detail = answer.json()["detail"]
        assert detail["code"] == "node_unreachable" and "no path to its node" in detail["message"]
    answers = {r.answer for r in standin.requests_to("GET", "/v1/client/fs/logs/")}
    assert "No path to node" in answers, "the stand-in answers as Nomad does"


# ---- the backend alone, against the stand-in --------------------------------------------------


def _orchestrator(standin: StandIn) -> NomadOrchestrator:
    return NomadOrchestrator(
        NomadOrchestratorConfig(
            address=standin.url,
            token=TOKEN,
            namespace=NAMESPACE,
            driver="raw_exec",
            command=[sys.executable, "-c", SLEEPER],
            job_prefix="follow-",
        )
    )


def _spec(bot_id: str) -> LaunchSpec:
    return LaunchSpec(
        bot_id=bot_id, user_id="user-1", attempt=1, image=None, env={"BOTFLEET_BOT_ID": bot_id}
    )


def _read_until(follower: LogFollower, want: bytes, timeout: float = 5) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < len(want) and time.monotonic() < deadline:
        got += follower.read()
        time.sleep(0.05)
    return got


def test_a_follower_starts_at_the_end_of_a_big_log_and_misses_nothing(standin: StandIn) -> None:
    orchestrator = _orchestrator(standin)
    ref = orchestrator.launch(_spec("big"))
    try:
        wait_until(lambda: orchestrator.inspect(ref).state == WorkloadState.RUNNING, timeout=10)
        stdout = _stdout(standin, ref)
        wait_until(lambda: stdout.read_bytes() == b"up\n", timeout=10, what="the task's output")
        # 3 MiB written before the follow: more than a tail window (256 KiB) and a read's budget.
        _append(stdout, b"".join(b"old line %07d\n" % i for i in range(200_000)))
        before = len(standin.requests_to("GET", "/v1/client/fs/logs/"))

        follower = orchestrator.follow_logs(ref, bot_id="big", tail=2)
        opened = len(standin.requests_to("GET", "/v1/client/fs/logs/")) - before
        assert opened <= 40, f"finding the end took {opened} reads"
        assert follower.read() == b"old line 0199998\nold line 0199999\n", "the tail first"
        assert follower.read() == b"", "nothing written before the follow is repeated"

        _append(stdout, b"new 1\nnew 2\n")
        assert _read_until(follower, b"new 1\nnew 2\n") == b"new 1\nnew 2\n"
        # An unfinished line waits for its end, so the two streams never mix within a line...
        _append(stdout, b"half")
        assert follower.read() == b""
        _append(stdout, b" and half\n")
        assert follower.read() == b"half and half\n"
        # ...but a line left unfinished (the bot paused, or exited) is not lost.
        _append(stdout, b"last words")
        assert _read_until(follower, b"last words") == b"last words"

        # Nomad rotated the log away under the follower (here: it shrank below the offset).
        stdout.write_bytes(b"")
        assert follower.read() == SKIPPED
        _append(stdout, b"after rotation\n")
        assert _read_until(follower, b"after rotation\n") == b"after rotation\n"
        follower.close()
    finally:
        orchestrator.stop(ref, grace_s=1)
        orchestrator.remove(ref)


def test_a_follower_opened_before_the_allocation_gets_all_it_writes(standin: StandIn) -> None:
    orchestrator = _orchestrator(standin)
    ref = orchestrator.launch(_spec("early"))
    try:
        assert orchestrator.inspect(ref).state == WorkloadState.PENDING, "no allocation yet"
        follower = orchestrator.follow_logs(ref, bot_id="early", tail=5)
        assert _read_until(follower, b"up\n", timeout=10) == b"up\n"
    finally:
        orchestrator.stop(ref, grace_s=1)
        orchestrator.remove(ref)

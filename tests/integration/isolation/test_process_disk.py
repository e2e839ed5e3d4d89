"""Disk per bot on the process backend (issue 27, part 3): a bot's log cap holds while it
writes, and its /tmp and /dev/shm are its own and capped.

Every case performs the attack from inside a real bot process, bounded in time and disk (a
flood of at most 6 s and 256 MiB into a log cap of 2 files of 256 KiB; 200 MiB at most into a 16 MiB
/tmp). On main each fails: the bot's output went straight into its log file, rotated by
housekeeping every few seconds (the flood's files reached many times the cap between two
rotations), and bots wrote into the host's /tmp and /dev/shm, where the next bot found it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from botfleet.orchestrators import LaunchSpec
from botfleet.orchestrators.process import ProcessOrchestrator, ProcessOrchestratorConfig
from botfleet.orchestrators.process.sandbox import unavailable_reason
from tests.support import REPO, Manager, RedisServer, running_manager, wait_for_status, wait_until

LOG_CAP = 262_144
TMP_MB = 16


def _spec(**env: str) -> LaunchSpec:
    return LaunchSpec(
        bot_id=f"b{uuid.uuid4().hex[:8]}",
        user_id="user-1",
        attempt=1,
        image=None,
        env=env,
        secret_env={"BOTFLEET_BOT_TOKEN": "t"},
    )


def _run_to_end(backend: ProcessOrchestrator, spec: LaunchSpec) -> str:
    """Launch, wait for its exit, and answer its log (the workload is removed)."""
    ref = backend.launch(spec)
    try:
        wait_until(lambda: backend.inspect(ref).is_gone, timeout=60, what="the bot's exit")
        return backend.logs(ref, bot_id=spec.bot_id, tail=50)
    finally:
        backend.stop(ref, grace_s=0)
        backend.remove(ref)


# -- the log cap, while the bot writes -------------------------------------------------------------


@pytest.fixture
def manager(tmp_path: Path, redis_server: RedisServer) -> Iterator[Manager]:
    env = {
        "BOTFLEET_ALLOWED_BOT_MODULES": '["tests.bots.flood"]',
        "PYTHONPATH": str(REPO),
        "BOTFLEET_LOG_FILE_MAX_BYTES": str(LOG_CAP),
        "BOTFLEET_LOG_FILES": "2",
    }
    with running_manager(tmp_path, redis_server.url, extra_env=env) as instance:
        yield instance


def _latest_tick(client: httpx.Client, bot_id: str) -> float:
    text = client.get(f"/bots/{bot_id}/logs", params={"tail": 5}).text
    ticks = [line.split()[2] for line in text.splitlines() if line.startswith("TICK ")]
    return float(ticks[-1]) if ticks else 0.0


def test_a_flooding_bot_stays_within_its_log_cap_and_harms_no_one(manager: Manager) -> None:
    """A bot's child writes stdout as fast as it can for 6 s (256 MiB at most). Sampled all the
    while, none of its log files exceeds the cap (the manager writes them from a pipe); another
    user's bot's log keeps up (its latest line is never more than 3 s old) and the API answers."""
    _, client = manager.new_user()
    _, other_client = manager.new_user()
    ticker = other_client.post(
        "/bots", json={"bot": "tests.bots.flood:FloodBot", "config": {"mode": "tick"}}
    ).json()
    wait_for_status(other_client, ticker["id"], {"active"})
    wait_until(lambda: _latest_tick(other_client, ticker["id"]), timeout=20, what="a first tick")

    flooder = client.post(
        "/bots",
        json={
            "bot": "tests.bots.flood:FloodBot",
            "config": {"mode": "flood", "seconds": 6, "max_mb": 256},
        },
    ).json()
    wait_for_status(client, flooder["id"], {"active"})
    logs = manager.data_dir / "logs"
    peak, samples, slowest, oldest_tick = 0, 0, 0.0, 0.0
    deadline = time.monotonic() + 30
    while "FLOOD done" not in client.get(f"/bots/{flooder['id']}/logs", params={"tail": 3}).text:
        assert time.monotonic() < deadline, "the flood did not end"
        for path in logs.glob(f"{flooder['id']}.log*"):
            try:
                peak = max(peak, path.stat().st_size)
            except FileNotFoundError:  # rotated away meanwhile
                continue
        samples += 1
        started = time.monotonic()
        assert other_client.get(f"/bots/{ticker['id']}").json()["status"] == "active"
        slowest = max(slowest, time.monotonic() - started)
        oldest_tick = max(oldest_tick, time.time() - _latest_tick(other_client, ticker["id"]))
    text = client.get(f"/bots/{flooder['id']}/logs", params={"tail": 3}).text
    sent = int(text.split("FLOOD done ", 1)[1].split()[0])

    assert peak <= LOG_CAP, f"a log file reached {peak} bytes against a cap of {LOG_CAP}"
    assert sent > 4 * LOG_CAP, f"the flood was too small to prove anything: {sent}"
    assert samples >= 3, f"sampled {samples} times only while it wrote"
    total = sum(p.stat().st_size for p in logs.glob(f"{flooder['id']}.log*"))
    assert total <= 2 * LOG_CAP, total
    assert slowest < 2.0, f"another user's GET took {slowest:.2f} s during the flood"
    assert oldest_tick < 3.0, f"another bot's log lagged {oldest_tick:.2f} s behind"
    assert client.get(f"/bots/{flooder['id']}").json()["status"] == "active"


# -- a private, capped /tmp and /dev/shm -----------------------------------------------------------

needs_private_tmp = pytest.mark.skipif(
    unavailable_reason(TMP_MB) is not None,
    reason=f"no private /tmp here: {unavailable_reason(TMP_MB)}",
)

FILL = """
import errno, os
for place in ("/tmp", "/dev/shm"):
    path, written = os.path.join(place, os.environ["NAME"]), 0
    try:
        with open(path, "wb") as handle:
            while written < 200 << 20:
                handle.write(b"z" * (1 << 20))
                handle.flush()
                written += 1 << 20
        verdict = "wrote-all"
    except OSError as exc:
        verdict = errno.errorcode[exc.errno]
    print("FILL", place, verdict, written >> 20, flush=True)
"""


@needs_private_tmp
@pytest.mark.parametrize("bot_uids", ["on", "off"])
def test_a_bot_filling_tmp_and_shm_stops_at_its_cap(tmp_path: Path, bot_uids: str) -> None:
    """A bot writes 200 MiB into /tmp and into /dev/shm: ENOSPC at its 16 MiB, and nothing of it
    appears in the host's /tmp or /dev/shm (with its own uid, and as the manager's user)."""
    name = f"botfleet-fill-{uuid.uuid4().hex}"
    host_copies = [Path("/tmp") / name, Path("/dev/shm") / name]
    config = ProcessOrchestratorConfig(
        data_dir=tmp_path,
        command=[sys.executable, "-c", FILL],
        tmp_mb=TMP_MB,
        bot_uids=bot_uids,
    )
    try:
        text = _run_to_end(ProcessOrchestrator(config), _spec(NAME=name))
        assert not [path for path in host_copies if path.exists()]
    finally:
        for path in host_copies:
            path.unlink(missing_ok=True)
    verdicts = {line.split()[1]: line.split()[2:] for line in text.splitlines() if "FILL" in line}
    assert verdicts == {"/tmp": ["ENOSPC", str(TMP_MB)], "/dev/shm": ["ENOSPC", str(TMP_MB)]}, text


LEAVE = """
import os
with open(os.path.join("/tmp", os.environ["NAME"]), "w") as handle:
    handle.write("left behind")
os.mkfifo(os.path.join("/dev/shm", os.environ["NAME"]))
print("left", flush=True)
"""
LOOK = """
import os
name = os.environ["NAME"]
print("SEEN", [p for p in ("/tmp", "/dev/shm") if os.path.exists(os.path.join(p, name))])
"""


@needs_private_tmp
def test_what_a_bot_leaves_in_tmp_is_gone_for_the_next_bot(tmp_path: Path) -> None:
    """One bot leaves a file in /tmp and a FIFO in /dev/shm and exits; the next bot (the same
    user, the manager's own, so no uid stands between them) finds neither."""
    name = f"botfleet-left-{uuid.uuid4().hex}"
    host_copies = [Path("/tmp") / name, Path("/dev/shm") / name]

    def backend(script: str) -> ProcessOrchestrator:
        config = ProcessOrchestratorConfig(
            data_dir=tmp_path, command=[sys.executable, "-c", script], bot_uids="off"
        )
        return ProcessOrchestrator(config)

    try:
        assert "left" in _run_to_end(backend(LEAVE), _spec(NAME=name))
        seen = _run_to_end(backend(LOOK), _spec(NAME=name))
        assert "SEEN []" in seen, seen
        assert not [path for path in host_copies if path.exists()]
    finally:
        for path in host_copies:
            path.unlink(missing_ok=True)


def test_a_bot_that_ends_right_after_writing_has_every_line_logged(tmp_path: Path) -> None:
    """64 KiB and a last line, then exit: once inspect reports the end, the log holds it all
    (the manager drains the bot's pipe before it reports the exit)."""
    script = "import os; os.write(1, b'x' * 65536 + b'\\n'); print('LAST LINE', flush=True)"
    config = ProcessOrchestratorConfig(data_dir=tmp_path, command=[sys.executable, "-c", script])
    backend = ProcessOrchestrator(config)
    spec = _spec()
    ref = backend.launch(spec)
    wait_until(lambda: backend.inspect(ref).is_gone, timeout=30, what="the bot's exit")
    text = backend.logs(ref, bot_id=spec.bot_id, tail=3)
    backend.remove(ref)
    assert text.endswith("LAST LINE"), text[-200:]
    assert os.path.getsize(tmp_path / "logs" / f"{spec.bot_id}.log") > 65536


CHATTER = """
import sys
for n in range(1600):
    print("chatter", n, "c" * 1000, flush=True)
print("CHATTER DONE", flush=True)
"""
LAUNCH_AND_LEAVE = """
import sys
from botfleet.orchestrators import LaunchSpec
from botfleet.orchestrators.process import ProcessOrchestrator, ProcessOrchestratorConfig
command = [sys.executable, "-c", sys.argv[2]]
config = ProcessOrchestratorConfig(data_dir=sys.argv[1], command=command)
spec = LaunchSpec(bot_id="chatty", user_id="u", attempt=1, image=None, env={}, secret_env={})
backend = ProcessOrchestrator(config)
print(backend.launch(spec))
backend.close()  # a manager's shutdown: the chunk in hand is written, the pipe left as it is
"""


def test_output_written_while_no_manager_reads_is_logged_by_the_next(tmp_path: Path) -> None:
    """A manager process launches a bot and ends. The bot writes 1.6 MiB: its pipe holds 1 MiB,
    so it waits (it is not killed by EPIPE); the next manager takes the pipe over and every
    line lands in the log."""
    launched = subprocess.run(
        [sys.executable, "-c", LAUNCH_AND_LEAVE, str(tmp_path), CHATTER],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    ref = launched.stdout.split()[-1]
    config = ProcessOrchestratorConfig(data_dir=tmp_path, command=[sys.executable, "-c", CHATTER])
    backend = ProcessOrchestrator(config)
    try:
        wait_until(lambda: backend.inspect(ref).is_gone, timeout=30, what="the bot's exit")
        text = (tmp_path / "logs" / "chatty.log").read_text().rstrip("\n")
    finally:
        backend.stop(ref, grace_s=0)
        backend.remove(ref)
    assert text.endswith("CHATTER DONE"), text[-300:]
    numbers = [int(line.split()[1]) for line in text.splitlines() if line.startswith("chatter ")]
    assert numbers == list(range(1600))

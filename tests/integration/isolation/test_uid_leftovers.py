"""A bot's uid is never given to another bot while anything of it remains (issue 27, point 4).

The attack: a bot (under a uid of its own) leaves 0600 files in the machine's shared writable
places (/var/tmp, and /tmp and /dev/shm where it sees the real ones) and SysV IPC objects (a
shared memory segment, a semaphore set, a message queue), then exits. Before this fix the next
bot given that uid, another user's, could read all of it: removal freed the uid with its
leftovers in place, and the pool began again at its base after a manager restart.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from botfleet.orchestrators import LaunchFailed, LaunchSpec, OrchestratorError
from botfleet.orchestrators import process_isolation as isolation
from botfleet.orchestrators.base import StateRef
from botfleet.orchestrators.process import ProcessOrchestrator, ProcessOrchestratorConfig, leftovers
from botfleet.orchestrators.process.uid_pool import UidClaims
from tests.support import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bots get uids of their own as root")

UID_BASE = 241000  # away from the suite's other ranges
GID = 200000  # the bots' gid, which may traverse to the interpreter (scripts/test-services.sh)
PLACES = (Path("/var/tmp"), Path("/tmp"), Path("/dev/shm"))

#: The leaving bot: 0600 files and a directory in the shared places, three SysV IPC objects.
LEAVE = """
import ctypes, os, time
tag, key = os.environ["LEFTOVER_TAG"], int(os.environ["LEFTOVER_KEY"])
for place in ("/var/tmp", "/tmp", "/dev/shm"):
    fd = os.open(f"{place}/{tag}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"the previous bot's secret")
    os.close(fd)
os.makedirs(f"/var/tmp/{tag}.d/deeper")
libc = ctypes.CDLL(None, use_errno=True)
IPC_CREAT = 0o1000
assert libc.shmget(key, 4096, IPC_CREAT | 0o600) >= 0, ctypes.get_errno()
assert libc.semget(key, 1, IPC_CREAT | 0o600) >= 0, ctypes.get_errno()
assert libc.msgget(key, IPC_CREAT | 0o600) >= 0, ctypes.get_errno()
if os.environ.get("LEFTOVER_STAY"):
    time.sleep(60)
"""


@pytest.fixture
def work_root() -> Iterator[Path]:
    """A work root bot uids may traverse to (pytest's tmp_path is 0700)."""
    work = Path(tempfile.mkdtemp(prefix="bf-leftovers-"))
    work.chmod(0o755)
    yield work / "bots"
    for uid in range(UID_BASE, UID_BASE + 10):  # whatever a failed test left
        isolation.kill_uid(uid)
        leftovers.remove_all_of(uid)
    shutil.rmtree(work, ignore_errors=True)


def _orchestrator(data_dir: Path, work_root: Path, count: int) -> ProcessOrchestrator:
    """The state root lies beside the work root, under /tmp: neither is a leftover."""
    return ProcessOrchestrator(
        ProcessOrchestratorConfig(
            data_dir=data_dir,
            command=[sys.executable, "-c", LEAVE],
            uid_base=UID_BASE,
            uid_count=count,
            gid=GID,
            bot_uids="on",
            work_root=work_root,
            state_root=work_root.parent / "state",
            kill_wait_s=5,
        )
    )


def _launch(
    orch: ProcessOrchestrator, *, stay: bool = False, state: StateRef | None = None
) -> tuple[str, str, int]:
    """Start a leaving bot; (runtime_ref, its tag, its uid)."""
    tag = f"bf-leftover-{uuid.uuid4().hex}"
    env = {"LEFTOVER_TAG": tag, "LEFTOVER_KEY": str(random.randrange(1 << 20, 1 << 30))}
    if stay:
        env["LEFTOVER_STAY"] = "1"
    spec = LaunchSpec(bot_id=tag, user_id="u", attempt=1, image=None, env=env, state=state)
    ref = orch.launch(spec)
    record = json.loads((orch.config.data_dir / "workloads" / f"{ref}.json").read_text())
    return ref, tag, record["uid"]


def _left(orch: ProcessOrchestrator, ref: str, tag: str, uid: int) -> list[Path]:
    """Wait until the bot has left everything and exited; the files of it the manager sees."""
    wait_until(lambda: orch.inspect(ref).is_gone, timeout=20, what="the leaving bot to exit")
    assert orch.inspect(ref).exit_code == 0, orch.logs(ref, bot_id=tag, tail=20)
    files = [p / tag for p in PLACES if (p / tag).exists()]  # /tmp, /dev/shm may be private
    assert Path("/var/tmp", tag) in files
    assert all(f.stat().st_uid == uid and f.stat().st_mode & 0o777 == 0o600 for f in files)
    assert set(leftovers.ipc_of(uid)) == {"shm", "sem", "msg"}
    return files


def test_a_removed_bot_leaves_nothing_under_its_uid(tmp_path: Path, work_root: Path) -> None:
    orch = _orchestrator(tmp_path / "data", work_root, 4)
    state = StateRef(user_id="u", key="kept")
    ref, tag, uid = _launch(orch, state=state)
    files = _left(orch, ref, tag, uid)
    state_dir = Path(orch.state_dir(state))
    assert state_dir.stat().st_uid == uid  # the bot's while it ran, below /tmp here

    orch.remove(ref)

    assert [f for f in files if f.exists()] == []
    assert not Path("/var/tmp", f"{tag}.d").exists()
    assert leftovers.ipc_of(uid) == {}
    assert uid not in leftovers.file_owners(uid, uid + 1).owners
    assert isolation.processes_of_uid(uid) == []
    assert not (work_root / str(uid)).exists()  # the uid is free, and clean
    assert state_dir.stat().st_uid == 0  # the bot's state is kept (taken back), not a leftover


def test_a_uid_whose_leftovers_survive_removal_is_never_handed_out(
    tmp_path: Path, work_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process holds the bot's shared memory segment attached: removal cannot destroy
    it (it stays, and the uid could attach it by id), so the uid stays out until it is gone."""
    orch = _orchestrator(tmp_path / "data", work_root, 2)
    ref, tag, uid = _launch(orch)
    _left(orch, ref, tag, uid)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    libc.shmdt.argtypes = [ctypes.c_void_p]
    (shm_id,) = leftovers.ipc_of(uid)["shm"]
    address = libc.shmat(shm_id, None, 0)
    assert address not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
    try:
        with caplog.at_level(logging.WARNING):
            orch.remove(ref)
        assert f"bot uid {uid} stays out of the pool" in caplog.text
        assert leftovers.ipc_of(uid) == {"shm": [shm_id]}

        other_ref, _, other_uid = _launch(orch, stay=True)
        assert other_uid != uid
        with pytest.raises(LaunchFailed, match="not clean yet"):
            _launch(orch)  # the pool's one other uid is A's, with its segment still there
    finally:
        libc.shmdt(ctypes.c_void_p(address))
    # Detached, the segment is gone: the uid comes back at the pool's next scan.
    assert leftovers.ipc_of(uid) == {}

    def launched() -> tuple[str, str, int] | None:
        with suppress(LaunchFailed):
            return _launch(orch)
        return None

    again_ref, _, again_uid = wait_until(launched, timeout=10, what="the uid to come back")
    assert again_uid == uid
    for done in (other_ref, again_ref):
        orch.stop(done, grace_s=0)
        orch.remove(done)


def test_a_fresh_pool_skips_a_uid_with_leftovers_and_no_directory(work_root: Path) -> None:
    """What a crashed or older manager left: the uid's directory is gone, its files and IPC
    objects are not. A pool that never saw that bot still keeps the uid out."""
    uid = UID_BASE + 5
    switch = isolation.setpriv_prefix(uid, GID)
    assert switch is not None
    tag = f"bf-leftover-{uuid.uuid4().hex}"
    env = {"LEFTOVER_TAG": tag, "LEFTOVER_KEY": str(random.randrange(1 << 20, 1 << 30))}
    subprocess.run([*switch, sys.executable, "-c", LEAVE], env=env, cwd="/", check=True, timeout=30)
    assert Path("/var/tmp", tag).stat().st_uid == uid and leftovers.ipc_of(uid)

    claims = UidClaims(work_root, uid, 2, GID, scan_ttl_s=0)
    assert claims.claim()[0] == uid + 1
    with pytest.raises(OSError, match="not clean yet"):
        claims.claim()
    assert claims.clean(uid)
    assert claims.claim()[0] == uid


def test_a_restarted_manager_continues_the_pool_instead_of_starting_at_its_base(
    tmp_path: Path, work_root: Path
) -> None:
    data_dir = tmp_path / "data"
    first = _orchestrator(data_dir, work_root, 4)
    staying_ref, _, staying_uid = _launch(first, stay=True)  # adopted by the next manager
    gone_ref, gone_tag, gone_uid = _launch(first)
    assert (staying_uid, gone_uid) == (UID_BASE, UID_BASE + 1)
    _left(first, gone_ref, gone_tag, gone_uid)
    first.remove(gone_ref)

    restarted = _orchestrator(data_dir, work_root, 4)
    ref, _, uid = _launch(restarted)
    assert uid == UID_BASE + 2  # neither the base (still running) nor the uid just freed
    for done in (staying_ref, ref):
        restarted.stop(done, grace_s=0)
        with suppress(OrchestratorError):
            restarted.remove(done)

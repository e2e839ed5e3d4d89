"""Issue 16, the burst: a launch costs no scan of every process and no fork of the manager, and the
user's limit is checked with the user's row locked only for the count and the commit.

What a user would notice: bots still run under uids of their own with no supplementary groups
(now switched by `setpriv`), nicer than the manager so that a burst of runtimes starting never
starves the API; a uid that a live process still holds is never handed out again, even from a
reused scan; parallel POSTs never exceed the limit, and a raced duplicate `dedup_key` still names
the existing bot.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

import httpx
import pytest

from botfleet.orchestrators import OrchestratorError
from botfleet.orchestrators import process_isolation as isolation
from botfleet.orchestrators.base import LaunchSpec
from botfleet.orchestrators.process import ProcessOrchestrator, ProcessOrchestratorConfig
from botfleet.orchestrators.process.uid_pool import UidClaims
from tests.support import Manager, wait_until

ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="bots get uids of their own as root")
UID_BASE = 230000  # away from the suite's other ranges
GID = 200000  # the bots' gid, which may traverse to the interpreter (scripts/test-services.sh)


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _nice(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2 :].split()[16])  # field 19


@pytest.fixture
def orchestrator(tmp_path: Path) -> Iterator[ProcessOrchestrator]:
    work = Path(tempfile.mkdtemp(prefix="bf-burst-"))
    work.chmod(0o755)
    config = ProcessOrchestratorConfig(
        data_dir=tmp_path / "data",
        command=[sys.executable, "-c", "import time; time.sleep(60)"],
        uid_base=UID_BASE,
        uid_count=50,
        gid=GID,
        work_root=work / "bots",
        kill_wait_s=5,
    )
    orch = ProcessOrchestrator(config)
    yield orch
    for workload in orch.list_workloads():
        orch.stop(workload.runtime_ref, grace_s=0)
        with suppress(OrchestratorError):
            orch.remove(workload.runtime_ref)


def _spec(bot_id: str) -> LaunchSpec:
    return LaunchSpec(
        bot_id=bot_id, user_id="u", attempt=1, image=None, env={}, secret_env={}, labels={}
    )


@ROOT
def test_bots_run_under_their_own_uid_without_groups_and_nicer_than_the_manager(
    orchestrator: ProcessOrchestrator,
) -> None:
    refs = [orchestrator.launch(_spec(f"bot-{n}")) for n in range(3)]
    pids = [int(ref.split("-")[0]) for ref in refs]
    uids = set()
    for pid in pids:
        # The uid is switched by `setpriv`, which the launched process execs first: wait for it.
        wait_until(
            lambda pid=pid: _status(pid)["Uid"].split()[0] != "0",
            timeout=10,
            interval=0.02,
            what=f"bot process {pid} to drop root",
        )
        status = _status(pid)
        uid = {int(u) for u in status["Uid"].split()}
        gid = {int(g) for g in status["Gid"].split()}
        assert len(uid) == 1 and next(iter(uid)) >= UID_BASE  # real, effective, saved, fs
        assert gid == {GID}
        assert status["Groups"] == ""  # root's supplementary groups are gone
        assert _nice(pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)
        uids |= uid
    assert len(uids) == 3  # one uid per live bot


@ROOT
def test_a_uid_held_by_a_live_process_is_never_handed_out(tmp_path: Path) -> None:
    """The attack: a process left under a uid whose directory is gone (a removal whose sweep
    failed). A fresh scan skips it, and so does a reused scan once the uid is tainted."""
    root = tmp_path / "bots"
    claims = UidClaims(root, UID_BASE + 100, 3, GID, scan_ttl_s=3600)
    switch = isolation.setpriv_prefix(UID_BASE + 100, GID)
    assert switch is not None
    squatter = subprocess.Popen([*switch, "sleep", "60"])
    try:
        held = lambda: UID_BASE + 100 in isolation.uids_in_use(UID_BASE + 100, UID_BASE + 103)  # noqa: E731
        wait_until(held, timeout=10, what="the squatter under its uid")
        first, _ = claims.claim()  # the first claim scans
        assert first == UID_BASE + 101
        # the scan is reused from now on; a uid freed with a survivor is tainted by its removal
        claims.taint(UID_BASE + 102)
        (root / str(UID_BASE + 101)).rmdir()
        again, _ = claims.claim()
        assert again == UID_BASE + 101  # the freed, empty uid comes back; never 100 or 102
        (root / str(UID_BASE + 101)).rmdir()
        claims.claim()  # 101 again
        with pytest.raises(OSError):
            claims.claim()  # nothing left: 100 is busy, 102 tainted, 101 claimed
    finally:
        squatter.kill()
        squatter.wait()


def test_parallel_posts_never_exceed_the_limit_and_a_raced_dedup_names_the_bot(
    manager: Manager,
) -> None:
    user, client = manager.new_user(max_bots=5)
    headers = {"Authorization": f"Bearer {user['api_key']}"}

    def post(body: dict) -> httpx.Response:
        with httpx.Client(base_url=manager.url, headers=headers, timeout=60) as c:
            return c.post("/bots", json=body)

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(post, [{"bot": "demo", "config": {}}] * 12))
    codes = sorted(a.status_code for a in answers)
    assert codes.count(201) == 5 and codes.count(429) == 7, codes
    for bot in (a.json() for a in answers if a.status_code == 201):
        client.post(f"/bots/{bot['id']}/stop")

    _, other = manager.new_user(max_bots=20)
    body = {"bot": "demo", "config": {}, "dedup_key": "one-meeting"}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: other.post("/bots", json=body), range(8)))
    created = [a.json()["id"] for a in answers if a.status_code == 201]
    assert len(created) == 1, [a.status_code for a in answers]
    for refused in (a for a in answers if a.status_code != 201):
        assert refused.status_code == 409
        detail = refused.json()["detail"]
        assert detail["code"] == "duplicate_bot" and detail.get("bot_id") == created[0], detail
    other.post(f"/bots/{created[0]}/stop")
    client.close()
    other.close()

"""Resources per bot on the process backend (issue 27, part 2): one cgroup per bot holds the
memory of all its processes, its pids, and every process it started, wherever it moved.

Every case performs the attack from inside a real bot process, bounded (a 160 MiB or 32-pid
cgroup, 200 forks at most, a 120 s sleep), and fails on main: there, memory was a per-process
RLIMIT_AS (two children each under it pass), a bot under the manager's user had no process
limit at all, and a bot whose main process exited read `exited` while its setsid child lived.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from botfleet.orchestrators import LaunchFailed, LaunchSpec
from botfleet.orchestrators.base import BackendUnavailable, WorkloadState
from botfleet.orchestrators.process import ProcessOrchestrator, ProcessOrchestratorConfig
from botfleet.orchestrators.process.cgroups import Cgroup, detect
from tests.support import REPO, Manager, RedisServer, running_manager, wait_for_status, wait_until

CGROUPS = detect(None, Path("/nonexistent-botfleet-probe"))
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or isinstance(CGROUPS, str),
    reason=f"needs root and a cgroup v2 subtree or writable v1 hierarchies: {CGROUPS}",
)
MEMORY_MIB = 160


def _alive(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2 :].split()[0] not in "ZX"


def _spec() -> LaunchSpec:
    return LaunchSpec(
        bot_id=f"b{uuid.uuid4().hex[:8]}",
        user_id="user-1",
        attempt=1,
        image=None,
        env={},
        secret_env={"BOTFLEET_BOT_TOKEN": "t"},
    )


def _backend(tmp_path: Path, script: str, **settings: object) -> ProcessOrchestrator:
    config = ProcessOrchestratorConfig(
        data_dir=tmp_path, command=[sys.executable, "-c", script], **settings
    )
    return ProcessOrchestrator(config)


def _record(backend: ProcessOrchestrator, ref: str) -> dict[str, object]:
    path = backend.config.data_dir / "workloads" / f"{ref}.json"
    record: dict[str, object] = json.loads(path.read_text())
    return record


# -- memory: all of a bot's processes together ---------------------------------------------------


@pytest.fixture
def manager(tmp_path: Path, redis_server: RedisServer) -> Iterator[Manager]:
    env = {
        "BOTFLEET_ALLOWED_BOT_MODULES": '["tests.bots.hog"]',
        "PYTHONPATH": str(REPO),
        "BOTFLEET_PROCESS_RLIMIT_AS_MB": str(MEMORY_MIB),
    }
    with running_manager(tmp_path, redis_server.url, extra_env=env) as instance:
        yield instance


def test_two_processes_over_the_bots_memory_end_it_out_of_memory(manager: Manager) -> None:
    """Two children of 100 MiB each: each under the bot's 160 MiB, together over it. The
    kernel's OOM killer acts in the bot's cgroup; the bot ends `failed` (`out_of_memory`), as a
    whole; the manager and another user's bot carry on."""
    _, client = manager.new_user()
    _, other_client = manager.new_user()
    bystander = other_client.post("/bots", json={"bot": "demo", "config": {}}).json()
    wait_for_status(other_client, bystander["id"], {"active"})

    hog = client.post(
        "/bots", json={"bot": "tests.bots.hog:HogBot", "config": {"children": 2, "mb": 100}}
    ).json()
    ended = wait_for_status(client, hog["id"], {"failed", "completed"}, timeout=60)
    assert (ended["status"], ended["status_reason"]) == ("failed", "out_of_memory"), ended
    # Both children may have printed "holds 100": the OOM killer ended the first as the second
    # grew. Each fits a per-process limit; only a limit on the whole bot ends it.
    history = client.get(f"/bots/{hog['id']}/transitions").json()["items"]
    assert "OOM killer" in history[-1]["detail"], history[-1]

    assert other_client.get(f"/bots/{bystander['id']}").json()["status"] == "active"
    assert manager.proc is not None and manager.proc.poll() is None
    ready = client.get("/readyz").json()
    assert ready["containment"] == {"resources": CGROUPS.name, "uids": "own"}, ready  # type: ignore[union-attr]


# -- pids ----------------------------------------------------------------------------------------

FORKS = """
import os, time
made = 0
for _ in range(200):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(120)
        os._exit(0)
    made += 1
print("forked", made, flush=True)
time.sleep(120)
"""


def test_a_fork_loop_stops_at_the_bots_pids(tmp_path: Path) -> None:
    """A bot under the manager's own user (no RLIMIT_NPROC of its own: the count would be the
    manager's) forks up to 200 sleepers; its cgroup's pids.max stops it at 32."""
    backend = _backend(tmp_path, FORKS, bot_uids="off", rlimit_nproc=32)
    spec = _spec()
    ref = backend.launch(spec)
    try:
        text = wait_until(
            lambda: "forked" in (t := backend.logs(ref, bot_id=spec.bot_id, tail=5)) and t,
            timeout=30,
            what="the fork loop's count",
        )
        made = int(text.split("forked ", 1)[1].split()[0])
        assert made < 32, text
        cgroup = Cgroup.from_record(_record(backend, ref)["cgroup"])  # type: ignore[arg-type]
        assert cgroup is not None and len(cgroup.pids()) <= 32
    finally:
        backend.stop(ref, grace_s=0)
    assert not cgroup.pids()
    backend.remove(ref)
    assert not any(path.exists() for path in cgroup.dirs.values())


# -- processes that left the group ---------------------------------------------------------------

ESCAPES = """
import os, subprocess, sys
child = subprocess.Popen(["sleep", "120"], start_new_session=True)
print("child:", child.pid, flush=True)
os._exit(0)
"""


@pytest.mark.parametrize(("cgroups", "bot_uids"), [("auto", "off"), ("auto", "on"), ("off", "on")])
def test_an_escaped_child_keeps_the_workload_running_until_stop_kills_it(
    tmp_path: Path, cgroups: str, bot_uids: str
) -> None:
    """The bot starts a setsid child and exits 0: while the child lives, the workload is not
    `exited` (on main it was, and the bot then read `completed`); stop kills the child."""
    backend = _backend(tmp_path, ESCAPES, cgroups=cgroups, bot_uids=bot_uids)
    spec = _spec()
    ref = backend.launch(spec)
    pid = int(_record(backend, ref)["pid"])  # type: ignore[call-overload]
    text = wait_until(
        lambda: "child:" in (t := backend.logs(ref, bot_id=spec.bot_id, tail=5)) and t,
        timeout=20,
        what="the escaped child's pid",
    )
    child = int(text.split("child: ", 1)[1].split()[0])
    wait_until(lambda: not _alive(pid), timeout=20, what="the bot's main process to exit")
    status = backend.inspect(ref)
    assert _alive(child)
    assert status.state == WorkloadState.RUNNING and "main process ended" in status.detail
    assert not any(w.status.is_gone for w in backend.list_workloads())

    final = backend.stop(ref, grace_s=1)
    assert final.is_gone and final.exit_code == 0, final
    assert not _alive(child)
    backend.remove(ref)


# -- where cgroups cannot be made ----------------------------------------------------------------


def test_cgroups_on_refuses_launches_where_none_can_be_made(tmp_path: Path) -> None:
    """A parent that is no cgroup: `on` refuses (launch, /readyz), `auto` runs with rlimits."""
    not_a_cgroup = tmp_path / "plain"
    not_a_cgroup.mkdir()
    strict = _backend(tmp_path / "on", "print('ran')", cgroups="on", cgroup_parent=not_a_cgroup)
    with pytest.raises(LaunchFailed) as refused:
        strict.launch(_spec())
    assert refused.value.code == "isolation_unavailable"
    assert "BOTFLEET_PROCESS_CGROUPS=on" in str(refused.value)
    assert "memory and pids" in str(refused.value)
    with pytest.raises(BackendUnavailable):
        strict.check_health()
    assert strict.containment()["resources"] == "refused"
    assert not list((tmp_path / "on" / "workloads").glob("*.json"))

    lenient = _backend(
        tmp_path / "auto", "print('ran')", cgroups="auto", cgroup_parent=not_a_cgroup
    )
    assert lenient.containment()["resources"] == "rlimits"
    spec = _spec()
    ref = lenient.launch(spec)
    wait_until(lambda: lenient.inspect(ref).is_gone, timeout=20, what="the bot's exit")
    assert _record(lenient, ref)["cgroup"] is None
    assert "ran" in lenient.logs(ref, bot_id=spec.bot_id, tail=5)
    lenient.remove(ref)

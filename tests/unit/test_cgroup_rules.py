"""The process backend's cgroup logic without a kernel: which cgroup the manager is in, what a
bot's cgroup gets written (v2, on a stand-in folder), how an OOM kill is read, and the reason
a bot's end then gets. The real thing: tests/integration/isolation/test_process_cgroups.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from botfleet.manager.core.models import Bot
from botfleet.manager.lifecycle import BotStatus
from botfleet.manager.lifecycle.rules import HEARTBEAT_LOST, on_workload_gone
from botfleet.orchestrators.process import ProcessOrchestratorConfig
from botfleet.orchestrators.process.cgroups import (
    Cgroup,
    CgroupTree,
    Limits,
    enter_prefix,
    own_cgroup,
    scope_name,
)

S = BotStatus
PROC_CGROUP = "9:name=systemd:/\n8:pids:/a\n2:cpu,cpuacct:/c\n4:memory:/m/x\n0::/unified/path\n"


def test_the_managers_own_cgroup_in_each_hierarchy() -> None:
    assert own_cgroup("memory", PROC_CGROUP) == "/m/x"
    assert own_cgroup("cpu", PROC_CGROUP) == "/c"  # co-mounted with cpuacct
    assert own_cgroup("", PROC_CGROUP) == "/unified/path"
    assert own_cgroup("blkio", PROC_CGROUP) is None


def test_a_v2_cgroup_gets_its_limits_and_its_parents_delegate(tmp_path: Path) -> None:
    parent = tmp_path / "delegated"
    parent.mkdir()
    (parent / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    scope = parent / "botfleet" / scope_name(tmp_path)
    tree = CgroupTree(2, {"unified": scope})
    cgroup = tree.create("bot-1-abc", Limits(64 << 20, 32, 200, 50))

    assert (parent / "cgroup.subtree_control").read_text() == "+cpu +io +memory +pids"
    leaf = scope / "bot-1-abc"
    assert cgroup.dirs == {"unified": leaf}
    assert (leaf / "memory.max").read_text() == str(64 << 20)
    assert (leaf / "pids.max").read_text() == "32"
    assert (leaf / "memory.oom.group").read_text() == "1"  # ends as a whole
    assert not (leaf / "cpu.weight").exists()  # written only where the kernel offers it
    assert Cgroup.from_record(cgroup.to_record()) == cgroup


def test_the_bot_enters_its_cgroup_before_the_rest_of_its_command() -> None:
    cgroup = Cgroup(1, {"memory": Path("/cg/memory/b"), "pids": Path("/cg/pids/b")})
    prefix = enter_prefix(cgroup)
    assert prefix[1] == "-c" and 'exec "$@"' in prefix[2]
    assert prefix[4:] == ["/cg/memory/b/cgroup.procs", "/cg/pids/b/cgroup.procs", "--"]


@pytest.mark.parametrize(
    ("version", "name", "text"),
    [
        (2, "memory.events", "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 1\n"),
        (1, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
    ],
)
def test_oom_kills_are_read(tmp_path: Path, version: int, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    cgroup = Cgroup(version, {"unified" if version == 2 else "memory": tmp_path})
    assert cgroup.oom_kills() == 2
    (tmp_path / name).unlink()
    assert cgroup.oom_kills() == 0  # gone: nothing known


def _bot(status: BotStatus, reason: str = "started") -> Bot:
    return Bot(id="b", user_id="u", bot="demo", status=status, status_reason=reason, attempt=1)


@pytest.mark.parametrize("status", [S.STARTING, S.ACTIVE, S.STOPPING])
def test_an_engines_out_of_memory_is_the_bots_reason(status: BotStatus) -> None:
    outcome = on_workload_gone(_bot(status), 137, "out of memory", "out_of_memory")
    assert (outcome.target, outcome.reason, outcome.exit_code) == (S.FAILED, "out_of_memory", 137)
    silent = on_workload_gone(_bot(S.STOPPING, HEARTBEAT_LOST), 137, "", "out_of_memory")
    assert silent.reason == HEARTBEAT_LOST  # what ended it: the reconciler, for silence


def test_the_settings_users_already_set_still_name_the_figures(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BOTFLEET_PROCESS_RLIMIT_AS_MB", "64")
    monkeypatch.setenv("BOTFLEET_PROCESS_CGROUPS", "on")
    config = ProcessOrchestratorConfig(data_dir=tmp_path)
    assert (config.rlimit_as_mb, config.cgroups, config.cpu_weight) == (64, "on", 100)

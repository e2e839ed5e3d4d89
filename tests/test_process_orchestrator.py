"""The process backend against real child processes (small `python -c` scripts, not the runtime)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from orchestrators import (
    LABEL_BOT_ID,
    BackendUnavailable,
    LaunchFailed,
    LaunchSpec,
    OrchestratorError,
    WorkloadState,
    backend_class,
)
from orchestrators.process import ProcessOrchestrator, ProcessOrchestratorConfig

SECRET = "s3cr3t-token-value"

# Prints to both streams, starts a grandchild in its own process group, then sleeps.
SLEEPER = """
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("hello from bot", flush=True)
print("secret seen:", "BOT_SECRET" in os.environ, flush=True)
print("manager var leaked:", "MANAGER_ONLY" in os.environ, flush=True)
print("to stderr", file=sys.stderr, flush=True)
time.sleep(60)
"""
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""
EXIT3 = "import sys; print('bye', flush=True); sys.exit(3)"
CHATTY = "for i in range(5000): print('line', i)"


@pytest.fixture
def make(tmp_path):
    """Builds orchestrators over one data dir; kills every process they launched afterwards."""
    made: list[ProcessOrchestrator] = []

    def _make(script: str | None = None, command: list[str] | None = None):
        cfg = ProcessOrchestratorConfig(
            data_dir=tmp_path / "data",
            command=command or [sys.executable, "-c", script or SLEEPER],
            kill_wait_s=5,
        )
        made.append(ProcessOrchestrator(cfg))
        return made[-1]

    yield _make
    for orch in made:
        for workload in orch.list_workloads():
            orch.stop(workload.runtime_ref, grace_s=0)
    for orch in made:  # reap our own children
        orch.list_workloads()


def spec(bot_id: str = "bot-1", attempt: int = 1, **labels: str) -> LaunchSpec:
    return LaunchSpec(
        bot_id=bot_id,
        user_id="user-1",
        attempt=attempt,
        image=None,
        env={"BOT_SECRET": SECRET, "BOT_ID": bot_id},
        labels=labels,
    )


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return result


def live_group_members(pgid: int) -> list[int]:
    """Pids of non-zombie processes in a process group (zombies may wait for a lazy pid 1)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in "ZX":
            members.append(int(entry.name))
    return members


def test_launch_inspect_logs_and_graceful_stop(make, monkeypatch):
    monkeypatch.setenv("MANAGER_ONLY", "do-not-inherit")
    orch = make()
    ref = orch.launch(spec())
    pid = int(ref.split("-")[0])
    assert orch.inspect(ref).state is WorkloadState.RUNNING
    assert os.getpgid(pid) == pid  # its own process group / session

    wait_for(lambda: "to stderr" in orch.logs(ref, bot_id="bot-1", tail=100))
    text = orch.logs(ref, bot_id="bot-1", tail=100)
    assert text.startswith("--- attempt 1 started at ")
    assert "hello from bot" in text
    assert "secret seen: True" in text
    assert "manager var leaked: False" in text
    assert len(live_group_members(pid)) == 2  # the bot and its grandchild

    status = orch.stop(ref, grace_s=5)
    assert status.state is WorkloadState.EXITED
    assert status.exit_code == 128 + signal.SIGTERM
    assert orch.inspect(ref) == status
    wait_for(lambda: not live_group_members(pid))


def test_stop_kills_a_process_that_ignores_sigterm(make):
    orch = make(STUBBORN)
    ref = orch.launch(spec())
    wait_for(lambda: "ready" in orch.logs(ref, bot_id="bot-1", tail=5))
    began = time.monotonic()
    status = orch.stop(ref, grace_s=0.5)
    assert time.monotonic() - began >= 0.5
    assert status.state is WorkloadState.EXITED
    assert status.exit_code == 128 + signal.SIGKILL
    assert "SIGKILL" in status.detail


def test_exit_code_is_remembered_across_instances(make):
    orch = make(EXIT3)
    ref = orch.launch(spec())
    status = wait_for(lambda: (s := orch.inspect(ref)).is_gone and s)
    assert (status.state, status.exit_code) == (WorkloadState.EXITED, 3)

    restarted = make(EXIT3)
    assert restarted.inspect(ref).exit_code == 3
    assert restarted.stop(ref, grace_s=1).exit_code == 3  # already gone: no error


def test_second_instance_finds_and_stops_a_running_bot(make):
    first = make()
    ref = first.launch(spec())
    second = make()  # a new manager process over the same data dir
    assert second.inspect(ref).state is WorkloadState.RUNNING
    assert [w.runtime_ref for w in second.list_workloads()] == [ref]

    status = second.stop(ref, grace_s=5)
    assert status.state is WorkloadState.EXITED
    assert status.exit_code is None and "unknown" in status.detail
    assert first.inspect(ref).exit_code == 128 + signal.SIGTERM  # the parent still knows it


def test_list_workloads_filters_by_labels(make):
    orch = make()
    ref_a = orch.launch(spec("bot-a", team="a"))
    ref_b = orch.launch(spec("bot-b", team="b"))
    assert {w.runtime_ref for w in orch.list_workloads()} == {ref_a, ref_b}
    [only_a] = orch.list_workloads({"botfleet.label.team": "a"})
    assert (only_a.runtime_ref, only_a.bot_id) == (ref_a, "bot-a")
    assert only_a.status.state is WorkloadState.RUNNING
    assert [w.runtime_ref for w in orch.list_workloads({LABEL_BOT_ID: "bot-b"})] == [ref_b]
    assert orch.list_workloads({"botfleet.label.team": "a", LABEL_BOT_ID: "bot-b"}) == []


def test_records_never_hold_the_environment(make, tmp_path):
    orch = make()
    orch.launch(spec())
    records = list((tmp_path / "data" / "workloads").glob("*.json"))
    assert len(records) == 1
    assert SECRET not in records[0].read_text()
    assert "BOT_SECRET" not in records[0].read_text()


def test_unknown_refs_are_not_found(make):
    orch = make()
    for ref in ("12345-67890", "../../etc/passwd", ""):
        assert orch.inspect(ref).state is WorkloadState.NOT_FOUND
        assert orch.stop(ref, grace_s=0).state is WorkloadState.NOT_FOUND
        orch.remove(ref)  # nothing to forget: no error


def test_remove_refuses_running_then_forgets(make):
    orch = make()
    ref = orch.launch(spec())
    with pytest.raises(OrchestratorError):
        orch.remove(ref)
    orch.stop(ref, grace_s=5)
    orch.remove(ref)
    assert orch.inspect(ref).state is WorkloadState.NOT_FOUND
    assert orch.list_workloads() == []


def test_bad_executable_raises_launch_failed(make, tmp_path):
    orch = make(command=[str(tmp_path / "no-such-binary")])
    with pytest.raises(LaunchFailed) as info:
        orch.launch(spec())
    assert info.value.code == "launch_failed"
    assert "no-such-binary" in str(info.value)
    assert orch.list_workloads() == []


def test_logs_tail_and_attempts_append(make):
    orch = make(CHATTY)
    assert orch.logs("", bot_id="bot-1", tail=10) == ""  # no log yet
    for attempt in (1, 2):
        ref = orch.launch(spec(attempt=attempt))
        wait_for(lambda ref=ref: orch.inspect(ref).is_gone)
    assert orch.logs(ref, bot_id="bot-1", tail=3) == "line 4997\nline 4998\nline 4999"
    full = orch.logs(ref, bot_id="bot-1", tail=20000)
    assert full.count("--- attempt") == 2 and "--- attempt 2 started at" in full


def test_check_health(make, tmp_path):
    make().check_health()
    (tmp_path / "file").write_text("not a directory")
    broken = ProcessOrchestrator(ProcessOrchestratorConfig(data_dir=tmp_path / "file"))
    with pytest.raises(BackendUnavailable):
        broken.check_health()


def test_registry():
    assert backend_class("process") is ProcessOrchestrator
    with pytest.raises(ValueError, match="process"):
        backend_class("kubernetes")

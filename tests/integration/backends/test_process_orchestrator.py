"""What only the process backend does, against real child processes (small `python -c` scripts).

The cases every backend shares (launch, stop with grace, kill after it, not found versus
unavailable, listing by labels, logs, remove, secrets never in records) run on it in
tests/integration/backends/test_backend_contract.py.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest

from botfleet.orchestrators import LaunchFailed, LaunchSpec, OrchestratorError, WorkloadState
from botfleet.orchestrators.process import ProcessOrchestrator, ProcessOrchestratorConfig

SECRET = "s3cr3t-token-value"

# Prints to both streams, starts a grandchild in its own process group, then sleeps.
SLEEPER = """
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("hello from bot", flush=True)
print("secret in environ:", "BOT_SECRET" in os.environ, flush=True)
from botfleet.runtime.env import with_secret_env
piped = with_secret_env(os.environ).get("BOT_SECRET") == "s3cr3t-token-value"
print("secret via pipe:", piped, flush=True)
print("manager var leaked:", "MANAGER_ONLY" in os.environ, flush=True)
print("to stderr", file=sys.stderr, flush=True)
time.sleep(60)
"""
EXIT3 = "import sys; print('bye', flush=True); sys.exit(3)"
CHATTY = "for i in range(5000): print('line', i)"


@pytest.fixture
def make(tmp_path):
    """Builds orchestrators over one data dir; kills every process they launched afterwards."""
    made: list[ProcessOrchestrator] = []

    def _make(script: str | None = None, command: list[str] | None = None, **settings):
        cfg = ProcessOrchestratorConfig(
            data_dir=tmp_path / "data",
            command=command or [sys.executable, "-c", script or SLEEPER],
            kill_wait_s=5,
            **settings,
        )
        made.append(ProcessOrchestrator(cfg))
        return made[-1]

    yield _make
    for orch in made:
        for workload in orch.list_workloads():
            orch.stop(workload.runtime_ref, grace_s=0)
            with suppress(OrchestratorError):  # frees the bot's uid and working directory
                orch.remove(workload.runtime_ref)
    for orch in made:  # reap our own children
        orch.list_workloads()


def spec(bot_id: str = "bot-1", attempt: int = 1, **labels: str) -> LaunchSpec:
    return LaunchSpec(
        bot_id=bot_id,
        user_id="user-1",
        attempt=attempt,
        image=None,
        env={"BOT_ID": bot_id},
        secret_env={"BOT_SECRET": SECRET},
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


def test_a_bot_has_its_own_group_and_only_its_environment_and_sigterm_ends_the_group(
    make, monkeypatch
):
    """Running, logs, stop with grace and secrets in the environment: see test_backend_contract."""
    monkeypatch.setenv("MANAGER_ONLY", "do-not-inherit")
    orch = make()
    ref = orch.launch(spec())
    pid = int(ref.split("-")[0])
    assert os.getpgid(pid) == pid  # its own process group / session

    wait_for(lambda: "to stderr" in orch.logs(ref, bot_id="bot-1", tail=100))
    text = orch.logs(ref, bot_id="bot-1", tail=100)
    assert text.startswith("--- attempt 1 started at ")
    assert "hello from bot" in text
    assert "secret in environ: False" in text  # /proc/PID/environ would show it to others
    assert "secret via pipe: True" in text
    assert "manager var leaked: False" in text
    assert len(live_group_members(pid)) == 2  # the bot and its grandchild

    status = orch.stop(ref, grace_s=5)
    assert status.state is WorkloadState.EXITED
    assert status.exit_code == 128 + signal.SIGTERM
    assert orch.inspect(ref) == status
    wait_for(lambda: not live_group_members(pid))


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


def test_bad_executable_raises_launch_failed(make, tmp_path):
    # bot_uids off: as root, `auto` refuses first (the uid probe cannot run it either)
    orch = make(command=[str(tmp_path / "no-such-binary")], bot_uids="off")
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

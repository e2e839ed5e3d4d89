"""The backends' registry, the manager's one stop budget handed to every backend, and the stop
ladder (TERM, a grace, then KILL) against a fake workload; pure."""

from __future__ import annotations

import pytest

from botfleet.manager.core.settings import Settings
from botfleet.orchestrators import WorkloadState, backend_class
from botfleet.orchestrators.base import WorkloadStatus
from botfleet.orchestrators.process import ProcessOrchestrator
from botfleet.orchestrators.stopping import Engine, stop_workload


def test_registry():
    assert backend_class("process") is ProcessOrchestrator
    with pytest.raises(ValueError, match="process"):
        backend_class("kubernetes")


@pytest.mark.parametrize("name", ["process", "docker", "nomad"])
def test_every_backend_takes_the_managers_one_stop_budget(name, tmp_path):
    settings = Settings(orchestrator=name, data_dir=tmp_path, stop_grace_s=7, kill_after_s=3)
    backend = backend_class(name).from_settings(settings)
    assert (backend.config.stop_grace_s, backend.config.kill_wait_s) == (7, 3)
    assert settings.leave_grace_s < settings.stop_grace_s, "the bot leaves before any kill"


def _ladder(states: list[WorkloadState], calls: list[str]) -> Engine:
    """An engine whose workload goes through `states`, one per look."""

    def look() -> WorkloadStatus:
        calls.append("look")
        return WorkloadStatus(states.pop(0) if len(states) > 1 else states[0])

    return Engine(
        inspect=look,
        terminate=lambda: calls.append("TERM") and None,
        kill=lambda: calls.append("KILL"),
        wait_gone=lambda timeout: look(),
    )


def test_stop_ladder_kills_only_after_the_grace_and_says_when_it_failed():
    running, exited = WorkloadState.RUNNING, WorkloadState.EXITED
    calls: list[str] = []
    assert stop_workload(_ladder([exited], calls), grace_s=1, kill_wait_s=1).is_gone
    assert calls == ["look"], "a workload already gone is not signalled"

    calls.clear()
    assert stop_workload(_ladder([running, exited], calls), grace_s=1, kill_wait_s=1).is_gone
    assert calls == ["look", "TERM", "look"], "left within the grace: no SIGKILL"

    calls.clear()
    status = stop_workload(_ladder([running, exited], calls), grace_s=1, kill_wait_s=1,
                           kill_leftovers=True)  # fmt: skip
    assert status.is_gone and calls == ["look", "TERM", "look", "KILL"]

    calls.clear()
    status = stop_workload(_ladder([running], calls), grace_s=1, kill_wait_s=2)
    assert calls == ["look", "TERM", "look", "KILL", "look"]
    assert (status.state, status.detail) == (running, "still running 2s after SIGKILL")

"""How the nomad backend reads Nomad's answers: allocation and job status to a workload status;
pure."""

from __future__ import annotations

import pytest

from botfleet.orchestrators.base import WorkloadState, WorkloadStatus
from botfleet.orchestrators.nomad import alloc_status, job_status


def _alloc(client_status: str, *events: dict[str, object]) -> dict[str, object]:
    return {
        "ID": "a",
        "ClientStatus": client_status,
        "CreateIndex": 1,
        "TaskStates": {"bot": {"State": "dead", "Events": list(events)}},
    }


@pytest.mark.parametrize(
    ("alloc", "expected"),
    [
        (_alloc("pending"), WorkloadStatus(WorkloadState.PENDING)),
        (_alloc("running"), WorkloadStatus(WorkloadState.RUNNING)),
        (
            _alloc("complete", {"Type": "Terminated", "ExitCode": 0, "Signal": 0}),
            WorkloadStatus(WorkloadState.EXITED, 0, "exited with code 0"),
        ),
        (
            _alloc("failed", {"Type": "Started"}, {"Type": "Terminated", "ExitCode": 3}),
            WorkloadStatus(WorkloadState.EXITED, 3, "exited with code 3"),
        ),
        (
            _alloc("failed", {"Type": "Terminated", "ExitCode": -1, "Signal": 9}),
            WorkloadStatus(WorkloadState.EXITED, 137, "exited with code 137"),
        ),
        (
            _alloc("failed", {"Type": "Driver Failure", "DisplayMessage": "no such image"}),
            WorkloadStatus(WorkloadState.EXITED, None, "Driver Failure: no such image"),
        ),
        (
            _alloc("lost"),  # a job without StopOnClientAfter: Nomad replaces it at once
            WorkloadStatus(WorkloadState.EXITED, None, "allocation lost (node ?)", "node_lost"),
        ),
        (
            {**_alloc("unknown"), "NodeName": "n2"},
            WorkloadStatus(
                WorkloadState.UNKNOWN,
                None,
                "allocation unknown: node n2 is down, the bot may still run there",
            ),
        ),
    ],
)
def test_allocation_status_mapping(alloc: dict[str, object], expected: WorkloadStatus) -> None:
    assert alloc_status(alloc) == expected


def test_job_status_without_allocations_and_the_first_allocation_is_the_bot() -> None:
    assert job_status({"Status": "pending"}, []).state == WorkloadState.PENDING
    assert job_status({"Status": "dead"}, []).state == WorkloadState.EXITED
    # A replacement Nomad placed for a lost allocation is a second copy, never the bot.
    old = {**_alloc("lost"), "CreateIndex": 5}
    new = {**_alloc("running"), "CreateIndex": 9}
    assert job_status({"Status": "running"}, [new, old]).state == WorkloadState.EXITED


S = 1_000_000_000
JOB = {
    "TaskGroups": [{"Disconnect": {"StopOnClientAfter": 20 * S}, "Tasks": [{"KillTimeout": 4 * S}]}]
}


def _lost(at: str) -> dict[str, object]:
    """A lost allocation read whole: AllocStates carries when the servers marked it lost."""
    states = [{"Field": 0, "Value": "lost", "Time": at}]
    return {**_alloc("lost"), "NodeName": "n1", "AllocStates": states, "ModifyTime": 0}


def test_a_lost_allocation_ends_only_when_nomad_counts_its_client_stopped() -> None:
    """nomad/structs/alloc.go WaitClientStop: lost + StopOnClientAfter + max(5 s, KillTimeout);
    before that it may still run on its cut-off node: unknown, never an exit."""
    lost = _lost("2026-01-01T00:00:00.5Z")
    lost_ns = 1767225600 * S + S // 2
    before = alloc_status(lost, JOB, now_ns=lost_ns + 25 * S - 1)
    assert before.state == WorkloadState.UNKNOWN and "may still run" in before.detail
    after = alloc_status(lost, JOB, now_ns=lost_ns + 25 * S)
    assert (after.state, after.exit_code, after.reason) == (WorkloadState.EXITED, None, "node_lost")
    # Without AllocStates (a listing's stub) its ModifyTime, never earlier, stands in.
    stub = {**_alloc("lost"), "ModifyTime": lost_ns}
    assert alloc_status(stub, JOB, now_ns=lost_ns + 24 * S).state == WorkloadState.UNKNOWN
    assert alloc_status(stub, JOB, now_ns=lost_ns + 25 * S).state == WorkloadState.EXITED

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
        (_alloc("lost"), WorkloadStatus(WorkloadState.EXITED, None, "allocation lost")),
        (
            _alloc("unknown"),
            WorkloadStatus(WorkloadState.UNKNOWN, None, "nomad allocation status 'unknown'"),
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

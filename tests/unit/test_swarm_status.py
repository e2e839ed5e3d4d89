"""The swarm backend's one status mapping (orchestrators/swarm/status.py), from task, service and
node JSON shaped as a Docker Engine 20.10 (API 1.41) answers them (recorded, then trimmed): a
task on a node that is down is unknown, never an exit; Swarm's own shutdowns say why."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from botfleet.orchestrators.base import WorkloadState, WorkloadStatus
from botfleet.orchestrators.swarm.status import (
    LABEL_EXIT_CODE,
    latest_task,
    recorded_exit,
    workload_status,
)

S = WorkloadState

NODE: dict[str, Any] = {
    "ID": "h36qqlxam8pn6nxo94lyswps8",
    "Version": {"Index": 9},
    "Spec": {"Labels": {}, "Role": "worker", "Availability": "active"},
    "Description": {
        "Hostname": "n2",
        "Platform": {"Architecture": "x86_64", "OS": "linux"},
        "Engine": {"EngineVersion": "20.10.24+dfsg1"},
    },
    "Status": {"State": "ready", "Addr": "192.168.239.12"},
}


def service(replicas: int = 1, **labels: str) -> dict[str, Any]:
    return {
        "ID": "orxrrpk684iycsqxhuuy0b21p",
        "Version": {"Index": 14},
        "Spec": {
            "Name": "botfleet-b1-1",
            "Labels": {"botfleet.managed": "true", **labels},
            "Mode": {"Replicated": {"Replicas": replicas}},
        },
    }


def task(
    state: str,
    *,
    desired: str = "running",
    exit_code: int | None = None,
    err: str | None = None,
    message: str = "started",
    created: str = "2026-12-07T17:53:46.85628589Z",
) -> dict[str, Any]:
    status: dict[str, Any] = {"Timestamp": created, "State": state, "Message": message}
    if err is not None:
        status["Err"] = err
    if exit_code is not None:
        status["ContainerStatus"] = {"ContainerID": "5079e4a092ce", "PID": 0, "ExitCode": exit_code}
    return {
        "ID": "w6q4csoy0jo5zoovssnkvc9un",
        "Version": {"Index": 22},
        "CreatedAt": created,
        "ServiceID": "orxrrpk684iycsqxhuuy0b21p",
        "Slot": 1,
        "NodeID": NODE["ID"],
        "Status": status,
        "DesiredState": desired,
    }


def node(state: str = "ready", availability: str = "active") -> dict[str, Any]:
    made = copy.deepcopy(NODE)
    made["Status"]["State"] = state
    made["Spec"]["Availability"] = availability
    return made


@pytest.mark.parametrize(
    "state", ["new", "pending", "assigned", "accepted", "preparing", "ready", "starting"]
)
def test_every_state_before_running_is_pending(state: str) -> None:
    assert workload_status(service(), task(state), node()).state is S.PENDING


def test_pending_keeps_swarms_reason() -> None:
    unplaced = task(
        "pending",
        err="no suitable node (scheduling constraints not satisfied on 3 nodes)",
        message="pending task scheduling",
    )
    unplaced["NodeID"] = None
    status = workload_status(service(), unplaced, None)
    assert status.state is S.PENDING and "no suitable node" in status.detail


def test_running_on_a_ready_node_runs() -> None:
    assert workload_status(service(), task("running"), node()) == WorkloadStatus(S.RUNNING)


@pytest.mark.parametrize("state", ["down", "unknown", "disconnected"])
def test_running_on_a_node_that_is_not_ready_is_unknown_never_an_exit(state: str) -> None:
    """A partition: Swarm says `running`, desired `shutdown`, for ~80 s, and the bot really
    keeps running meanwhile."""
    status = workload_status(service(), task("running", desired="shutdown"), node(state))
    assert status.state is S.UNKNOWN and not status.is_gone
    assert status.detail == f"node n2 is {state}: the bot may still run there"


def test_ended_tasks_give_their_exit_codes() -> None:
    done = workload_status(service(), task("complete", desired="shutdown", exit_code=0), node())
    assert (done.state, done.exit_code) == (S.EXITED, 0)
    failed = task("failed", desired="shutdown", exit_code=3, err="task: non-zero exit (3)")
    status = workload_status(service(), failed, node())
    assert (status.state, status.exit_code, status.reason) == (S.EXITED, 3, None)
    assert status.detail == "task: non-zero exit (3)"


def test_an_oom_kill_the_node_engine_reports_is_out_of_memory() -> None:
    killed = task("failed", desired="shutdown", exit_code=137, err="task: non-zero exit (137)")
    assert workload_status(service(), killed, node()).reason is None
    status = workload_status(service(), killed, node(), oom_killed=True)
    assert (status.exit_code, status.reason) == (137, "out_of_memory")


def test_a_stop_botfleet_asked_for_is_a_plain_exit() -> None:
    """`stop` scaled the service to 0: Swarm's shutdown is ours, no failure reason."""
    stopped = task("shutdown", desired="remove", exit_code=0, message="shutdown")
    assert workload_status(service(replicas=0), stopped, node()) == WorkloadStatus(S.EXITED, 0)


def test_swarms_own_shutdown_after_a_lost_node_is_node_lost() -> None:
    """The partition healed: Swarm kills the copy it had given up on (the service still wants
    its replica, so botfleet never asked)."""
    killed = task("shutdown", desired="shutdown", exit_code=137, message="shutdown")
    status = workload_status(service(replicas=1), killed, node())
    assert (status.state, status.exit_code, status.reason) == (S.EXITED, 137, "node_lost")
    assert "node n2" in status.detail


def test_swarms_own_shutdown_on_a_drained_node_is_evicted() -> None:
    drained = task("shutdown", desired="shutdown", exit_code=0, message="shutdown")
    status = workload_status(service(), drained, node(availability="drain"))
    assert (status.state, status.reason) == (S.EXITED, "evicted")
    assert "node n2 was drained" in status.detail


def test_a_task_whose_node_was_removed_from_the_swarm_is_node_lost() -> None:
    """`docker node rm`: the operator declares the node gone; merely down never does."""
    status = workload_status(service(), task("running"), None, node_removed=True)
    assert (status.state, status.reason) == (S.EXITED, "node_lost")
    ended = task("complete", desired="shutdown", exit_code=0)
    assert workload_status(service(), ended, None, node_removed=True).reason is None


def test_rejected_tasks_say_why() -> None:
    no_image = task(
        "rejected",
        desired="shutdown",
        err="No such image: sha256:" + "0" * 64,
        message="preparing",
    )
    status = workload_status(service(), no_image, node())
    assert (status.state, status.reason) == (S.EXITED, "image_not_found")
    other = task("rejected", desired="shutdown", err="invalid mount config for type volume")
    assert workload_status(service(), other, node()).reason == "launch_failed"


def test_orphaned_and_unheard_of_states_are_unknown() -> None:
    assert workload_status(service(), task("orphaned"), node()).state is S.UNKNOWN
    assert workload_status(service(), task("remove"), node()).state is S.UNKNOWN


def test_a_service_without_its_task() -> None:
    """Just created: pending. Scaled down by `stop`, after Swarm deleted the task: the exit code
    `stop` recorded, else an exit without one."""
    assert workload_status(service(), None, None).state is S.PENDING
    recorded = service(replicas=0, **recorded_exit(WorkloadStatus(S.EXITED, 137)))
    assert recorded["Spec"]["Labels"][LABEL_EXIT_CODE] == "137"
    assert workload_status(recorded, None, None) == WorkloadStatus(S.EXITED, 137)
    unrecorded = workload_status(service(replicas=0), None, None)
    assert (unrecorded.state, unrecorded.exit_code) == (S.EXITED, None)
    assert recorded_exit(WorkloadStatus(S.UNKNOWN)) == {}


def test_the_newest_task_is_the_current_one() -> None:
    old = task("failed", exit_code=1, created="2026-12-07T17:00:00Z")
    new = task("running", created="2026-12-07T18:00:00Z")
    assert latest_task([new, old]) is new and latest_task([]) is None

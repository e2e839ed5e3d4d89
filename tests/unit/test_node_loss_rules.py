"""A bot whose node was lost or drained (the swarm backend's `node_lost`, `evicted`), as rules:
the node's fate is the reason even when the bot left on the engine's SIGTERM, the restart policy
retries it, silence judged first keeps `heartbeat_lost`, and a restart waits until every earlier
attempt's workload is confirmed gone; and the swarm backend's side, a task its node ended that
reads like a bot's own exit. Pure; on a real swarm: tests/cluster/test_swarm_drills.py."""

from __future__ import annotations

from typing import Any

import pytest

from botfleet.manager.core.models import Bot
from botfleet.manager.lifecycle import BotStatus, is_allowed
from botfleet.manager.lifecycle.rules import (
    EVICTED,
    HEARTBEAT_LOST,
    NODE_LOST,
    ExitReport,
    Outcome,
    Restart,
    may_relaunch,
    next_attempt,
    on_workload_gone,
)
from botfleet.orchestrators.base import WorkloadState
from botfleet.orchestrators.swarm.status import LABEL_SHUT_BY_SWARM, doomed, workload_status

S = BotStatus
LEFT_ON_SIGTERM = ExitReport(0, "sigterm")  # what the runtime reports after the engine's SIGTERM


def bot(status: BotStatus, reason: str = "started", **fields: Any) -> Bot:
    values: dict[str, Any] = {
        "id": "b1",
        "attempt": 1,
        "runtime_ref": "svc-1",
        "status_reason": reason,
        "restart_max_retries": 2,
        "restart_backoff_s": 1.0,
        "restart_on": None,
    }
    return Bot(status=status, **(values | fields))


# (status, its reason, engine's reason, the runtime's report) → (status, reason) it ends with
GONE_CASES = [
    (S.ACTIVE, "started", NODE_LOST, None, (S.FAILED, NODE_LOST)),
    (S.ACTIVE, "started", EVICTED, None, (S.FAILED, EVICTED)),
    # It left on the engine's SIGTERM (drain, an engine restarted): the node's fate, not `left`.
    (S.STOPPING, "sigterm", EVICTED, LEFT_ON_SIGTERM, (S.FAILED, EVICTED)),
    (S.STOPPING, "sigterm", NODE_LOST, LEFT_ON_SIGTERM, (S.FAILED, NODE_LOST)),
    (S.ACTIVE, "started", NODE_LOST, LEFT_ON_SIGTERM, (S.FAILED, NODE_LOST)),
    # Stopped for silence while its node was cut off: silence was judged first.
    (S.STOPPING, HEARTBEAT_LOST, NODE_LOST, None, (S.FAILED, HEARTBEAT_LOST)),
    (S.STOPPING, HEARTBEAT_LOST, NODE_LOST, LEFT_ON_SIGTERM, (S.FAILED, HEARTBEAT_LOST)),
    # Any other engine reason keeps the runtime's report (unchanged).
    (S.STOPPING, "sigterm", None, LEFT_ON_SIGTERM, (S.COMPLETED, "sigterm")),
    (S.STOPPING, "sigterm", "out_of_memory", LEFT_ON_SIGTERM, (S.COMPLETED, "sigterm")),
]


@pytest.mark.parametrize(("status", "reason", "engine", "report", "ends"), GONE_CASES)
def test_a_lost_or_drained_node_is_the_reason(
    status: BotStatus,
    reason: str,
    engine: str | None,
    report: ExitReport | None,
    ends: tuple[BotStatus, str],
) -> None:
    outcome = on_workload_gone(bot(status, reason), 0, "node n2", engine, report)
    assert (outcome.target, outcome.reason) == ends


# (status, reason of the bot, outcome, restart.on) → restarted?
RESTART_CASES = [
    (S.ACTIVE, "started", Outcome(S.FAILED, NODE_LOST), None, True),
    (S.STOPPING, "sigterm", Outcome(S.FAILED, EVICTED), None, True),  # left on the engine's signal
    (S.STOPPING, "sigterm", Outcome(S.FAILED, NODE_LOST), ["crash"], True),
    (S.STOPPING, "sigterm", Outcome(S.FAILED, NODE_LOST), ["heartbeat_lost"], False),
    (S.STOPPING, "sigterm", Outcome(S.FAILED, "crashed", 1), None, False),  # unchanged
    (S.STOPPING, "stop_requested", Outcome(S.COMPLETED, "left", 0), None, False),
]


@pytest.mark.parametrize(("status", "reason", "outcome", "on", "restarted"), RESTART_CASES)
def test_a_displaced_bot_is_restarted_by_its_policy(
    status: BotStatus, reason: str, outcome: Outcome, on: list[str] | None, restarted: bool
) -> None:
    answer = next_attempt(bot(status, reason, restart_on=on), outcome)
    assert answer == (Restart(attempt=2, delay_s=1.0) if restarted else None)


def test_a_displaced_leaving_bot_may_go_back_to_starting() -> None:
    assert is_allowed("stopping", "starting")


@pytest.mark.parametrize(
    ("earlier_gone", "relaunch"),
    [([], True), ([True, True], True), ([True, False], False), ([False], False)],
)
def test_a_restart_waits_for_proof_that_earlier_attempts_are_gone(
    earlier_gone: list[bool], relaunch: bool
) -> None:
    assert may_relaunch(earlier_gone) is relaunch


# ---- the swarm backend's side: a task its node ended, however the task's end reads -----------


def service(labels: dict[str, str] | None = None, replicas: int = 1) -> dict[str, Any]:
    return {"Spec": {"Labels": labels or {}, "Mode": {"Replicated": {"Replicas": replicas}}}}


def task(state: str, desired: str, code: int | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"State": state, "Message": "finished"}
    if code is not None:
        status["ContainerStatus"] = {"ExitCode": code}
    return {"Status": status, "DesiredState": desired, "NodeID": "id3"}


NODE = {"ID": "id3", "Description": {"Hostname": "n3"}, "Status": {"State": "ready"},
        "Spec": {"Availability": "active"}}  # fmt: skip
MARKED = {LABEL_SHUT_BY_SWARM: "true"}


def test_swarm_shutting_a_running_task_down_on_its_own_is_noticed_once() -> None:
    assert doomed(service(), task("running", "shutdown"))
    assert not doomed(service(MARKED), task("running", "shutdown"))  # recorded already
    assert not doomed(service(replicas=0), task("running", "shutdown"))  # botfleet's own stop
    assert not doomed(service(), task("running", "running"))
    assert not doomed(service(), task("complete", "shutdown", 0))  # a bot's own end


# A restarted engine SIGTERMs the bot: its task ends `complete` 0 like a bot that finished,
# and only the mark made while it ran says its node ended it.
@pytest.mark.parametrize(
    ("labels", "replicas", "ended", "reason"),
    [
        (MARKED, 1, task("complete", "shutdown", 0), NODE_LOST),
        (MARKED, 1, task("failed", "shutdown", 137), NODE_LOST),
        ({}, 1, task("complete", "shutdown", 0), None),  # it finished on its own
        (MARKED, 0, task("complete", "shutdown", 0), None),  # botfleet stopped it after all
    ],
)
def test_a_task_its_node_ended_reads_node_lost(
    labels: dict[str, str], replicas: int, ended: dict[str, Any], reason: str | None
) -> None:
    status = workload_status(service(labels, replicas), ended, NODE)
    assert (status.state, status.reason) == (WorkloadState.EXITED, reason)

"""Swarm placement (orchestrators/swarm/constraints.py, nodes.py): Swarm's own constraint
expressions are checked before a bot is stored, node labels become constraints, and a new
state volume goes to a node the bot may run on, as Swarm would match it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from botfleet.manager.backends import create_orchestrator
from botfleet.manager.bot_firewall import bot_uids
from botfleet.manager.core.settings import Settings
from botfleet.orchestrators.base import Placement, PlacementUnsupported, StateRef
from botfleet.orchestrators.swarm import SwarmOrchestrator, SwarmOrchestratorConfig
from botfleet.orchestrators.swarm.constraints import constraints_of, node_matches, parse
from botfleet.orchestrators.swarm.nodes import choose_node, holder, pin_constraint, state_label

CONFIG = SwarmOrchestratorConfig(base_url="unix:///nonexistent.sock")


def node(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    role: str = "worker",
    state: str = "ready",
    availability: str = "active",
    addr: str = "192.168.239.12",
) -> dict[str, Any]:
    return {
        "ID": f"id-{name}",
        "Version": {"Index": 9},
        "Spec": {"Labels": dict(labels or {}), "Role": role, "Availability": availability},
        "Description": {
            "Hostname": name,
            "Platform": {"Architecture": "x86_64", "OS": "linux"},
            "Engine": {"EngineVersion": "20.10.24", "Labels": {"disk": "ssd"}},
        },
        "Status": {"State": state, "Addr": addr},
    }


def test_check_placement_accepts_swarms_expressions_and_node_labels() -> None:
    backend = SwarmOrchestrator(CONFIG)
    placement = Placement(
        constraints=("node.labels.zone == a", "node.hostname!=n1", "node.role==worker"),
        node_labels={"gpu": "yes"},
    )
    backend.check_placement(placement)  # never asks the engine
    assert constraints_of(placement) == [
        "node.labels.zone==a",
        "node.hostname!=n1",
        "node.role==worker",
        "node.labels.gpu==yes",
    ]
    assert constraints_of(None) == []


@pytest.mark.parametrize(
    ("constraint", "why"),
    [
        ("zone=a", "not `<node attribute> == <value>`"),
        ("node.labels.zone=>a", "not `<node attribute>"),
        ("node.zone==a", "knows no attribute 'node.zone'"),
        ("attr.kernel.name == linux", "knows no attribute"),
        ("${meta.zone} != b", "is not a node attribute"),
        ("node.labels.zone==", "empty or not allowed"),
        ("node.labels.zone==a;b", "not allowed"),
        ("node.ip==not-an-address", "not an address or a CIDR"),
    ],
)
def test_what_swarm_would_refuse_or_never_match_is_a_422(constraint: str, why: str) -> None:
    with pytest.raises(PlacementUnsupported, match=r"examples: node\.labels\.zone==a") as refused:
        SwarmOrchestrator(CONFIG).check_placement(Placement(constraints=(constraint,)))
    assert why in str(refused.value)
    assert refused.value.code == "placement_unsupported"


def test_node_labels_and_nomads_datacenters() -> None:
    with pytest.raises(PlacementUnsupported, match="not allowed"):
        constraints_of(Placement(node_labels={"zone": "a=b"}))
    with pytest.raises(PlacementUnsupported, match="datacenters are Nomad's"):
        constraints_of(Placement(datacenters=("dc1",)))


def test_matching_is_swarms() -> None:
    n2 = node("n2", labels={"zone": "a", "Zone": "b"}, addr="192.168.239.12")
    assert node_matches(["node.hostname==N2", "node.labels.zone==A"], n2)  # values: any case
    assert not node_matches(["node.labels.ZONE==a"], n2)  # label keys: exact
    assert node_matches(["node.labels.missing!=x", "node.role!=manager"], n2)
    assert node_matches(["node.ip==192.168.239.0/24", "node.ip!=192.168.239.11"], n2)
    assert node_matches(["engine.labels.disk==ssd", "node.platform.os==linux"], n2)
    assert not node_matches(["node.id==id-n3"], n2)
    assert str(parse(" node.role  ==  worker ")) == "node.role==worker"


def test_a_new_state_goes_to_a_ready_active_node_the_bot_may_run_on() -> None:
    state = StateRef("user-1", "my key")
    label = state_label(CONFIG, state)
    assert label == f"botfleet-state.{state.slug}" and "my key" not in label
    assert pin_constraint(CONFIG, state) == f"node.labels.{label}==true"
    parse(pin_constraint(CONFIG, state))  # a constraint Swarm takes

    busy = {f"botfleet-state.{i}": "true" for i in range(2)}
    nodes = [
        node("n1", role="manager", labels=busy),
        node("n2", labels={"botfleet-state.x": "true"}),
        node("n3", state="down"),
        node("n4", availability="drain"),
        node("n5", labels={"botfleet-state.y": "true"}),
    ]
    assert (choose_node(CONFIG, nodes, []) or {})["ID"] == "id-n2"  # fewest, then by name
    assert (choose_node(CONFIG, nodes, ["node.role==manager"]) or {})["ID"] == "id-n1"
    assert choose_node(CONFIG, nodes, ["node.hostname==n3"]) is None  # down: none
    assert holder(nodes, label) is None
    pinned = copy.deepcopy(nodes)
    pinned[4]["Spec"]["Labels"][label] = "true"
    assert (holder(pinned, label) or {})["ID"] == "id-n5"


def test_settings_refuse_what_cannot_be_rendered() -> None:
    with pytest.raises(ValueError, match="numeric, non-root"):
        SwarmOrchestratorConfig(user="bot")
    with pytest.raises(ValueError, match="numeric, non-root"):
        SwarmOrchestratorConfig(user="0:0")
    with pytest.raises(ValueError, match="name_prefix"):
        SwarmOrchestratorConfig(name_prefix="bots/")
    assert SwarmOrchestratorConfig(user="2000").uid_gid == ("2000", "2000")


def test_the_manager_runs_the_swarm_backend(tmp_path: Path) -> None:
    """BOTFLEET_ORCHESTRATOR=swarm: built from its settings with the manager's stop budget,
    and the host firewall guards the uid its host-networked bots run as on this host."""
    settings = Settings(orchestrator="swarm", data_dir=tmp_path, stop_grace_s=7, kill_after_s=3)
    backend = create_orchestrator(settings)
    assert isinstance(backend, SwarmOrchestrator) and backend.name == "swarm"
    assert (backend.config.stop_grace_s, backend.config.kill_wait_s) == (7, 3)
    assert bot_uids(settings) == "10001"

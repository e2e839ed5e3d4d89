"""The nodes' own engines, and the node a bot's state volume is pinned to.

**Node engines.** A task's container lives on its node's engine. Reading its logs there (not
through `service logs`, which fails for a node after a partition, moby#35011), stopping it with
the exact grace asked for, telling an OOM kill, and removing a state volume all need that
engine: the one `BOTFLEET_SWARM_NODE_ENGINES` names for the node's hostname, else the manager's
own engine when the task runs on the manager's node, else none (the swarm's own ways then).

**State pinning.** A `state_key` is a local volume, so it lives on one node: the node carrying
the label `<prefix>state.<slug>=true` (`StateRef.slug`: no user text). The launch that needs it
labels a node first when none carries it (a ready, active node the bot's constraints allow, the
one holding the fewest states), and every launch with that state is constrained to the label.
When no node is eligible, the launch is still constrained: the bot waits (pending, with
Swarm's reason) rather than start somewhere its state is not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import docker
import docker.errors

from botfleet.orchestrators.base import BackendUnavailable, OrchestratorError, StateRef
from botfleet.orchestrators.docker.engine import engine_errors
from botfleet.orchestrators.swarm.config import SwarmOrchestratorConfig
from botfleet.orchestrators.swarm.constraints import node_matches
from botfleet.orchestrators.swarm.status import node_name

API_VERSION = "1.41"  # Pids limits and Ulimits on services; the engine the notes measured
UPDATE_TRIES = 5


def connect(base_url: str | None, timeout: float) -> docker.DockerClient:
    """A client of one engine; no request is made until it is used."""
    with engine_errors("connecting to the Docker Engine"):
        if base_url:
            return docker.DockerClient(base_url=base_url, timeout=int(timeout), version=API_VERSION)
        return docker.from_env(timeout=int(timeout), version=API_VERSION)


class NodeEngines:
    """Clients of the nodes' engines, made on first use and kept."""

    def __init__(
        self, config: SwarmOrchestratorConfig, manager: Callable[[], docker.DockerClient]
    ) -> None:
        self._config = config
        self._manager = manager
        self._clients: dict[str, docker.DockerClient] = {}
        self._lock = threading.Lock()
        self._own_node_id: str | None = None

    def own_node_id(self) -> str:
        """The swarm node the manager's engine is."""
        if self._own_node_id is None:
            with engine_errors("asking the Docker Engine for its swarm node"):
                info = self._manager().info()
            self._own_node_id = str((info.get("Swarm") or {}).get("NodeID") or "")
        return self._own_node_id

    def client_for(self, node: Mapping[str, Any] | None) -> docker.DockerClient | None:
        """The engine of `node`, or None when botfleet has no way to it."""
        if node is None:
            return None
        url = self._config.node_engines.get(node_name(node, ""))
        if url is None:
            return self._manager() if node.get("ID") == self.own_node_id() else None
        with self._lock:
            client = self._clients.get(url)
            if client is None:
                client = connect(url, self._config.api_timeout_s)
                self._clients[url] = client
            return client

    def unreachable(self, node: Mapping[str, Any], exc: Exception) -> BackendUnavailable:
        """The error that says which node's engine could not be asked."""
        return BackendUnavailable(
            f"the Docker Engine of node {node_name(node, str(node.get('ID', '')))} cannot be "
            f"reached ({exc}); it is unknown what runs there until it answers"
        )

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


# ---- state pinning -------------------------------------------------------------------------


def state_label(config: SwarmOrchestratorConfig, state: StateRef) -> str:
    return f"{config.name_prefix}state.{state.slug}"


def pin_constraint(config: SwarmOrchestratorConfig, state: StateRef) -> str:
    return f"node.labels.{state_label(config, state)}==true"


def holder(nodes: Sequence[Mapping[str, Any]], label: str) -> Mapping[str, Any] | None:
    """The node that carries the state's label (its volume lives there), if any."""
    for node in nodes:
        if ((node.get("Spec") or {}).get("Labels") or {}).get(label) == "true":
            return node
    return None


def _states_held(config: SwarmOrchestratorConfig, node: Mapping[str, Any]) -> int:
    labels = (node.get("Spec") or {}).get("Labels") or {}
    return sum(1 for key in labels if key.startswith(f"{config.name_prefix}state."))


def choose_node(
    config: SwarmOrchestratorConfig,
    nodes: Sequence[Mapping[str, Any]],
    constraints: Sequence[str],
) -> Mapping[str, Any] | None:
    """Where a new state volume goes: a ready, active node the bot may run on, the one
    holding the fewest states (then by hostname, so the choice is stable)."""
    eligible = [
        node
        for node in nodes
        if (node.get("Status") or {}).get("State") == "ready"
        and (node.get("Spec") or {}).get("Availability") == "active"
        and node_matches(list(constraints), node)
    ]
    if not eligible:
        return None
    return min(eligible, key=lambda n: (_states_held(config, n), node_name(n, str(n.get("ID")))))


def _set_label(
    client: docker.DockerClient, node: Mapping[str, Any], label: str, value: str | None
) -> None:
    """Set (or, with None, remove) one label of a node, at the version just read."""
    spec = dict(node.get("Spec") or {})
    labels = dict(spec.get("Labels") or {})
    if value is None:
        labels.pop(label, None)
    else:
        labels[label] = value
    spec["Labels"] = labels
    version = int((node.get("Version") or {}).get("Index") or 0)
    client.api.update_node(str(node["ID"]), version, spec)


def pin_state(
    client: docker.DockerClient,
    config: SwarmOrchestratorConfig,
    state: StateRef,
    constraints: Sequence[str],
) -> str:
    """The constraint that keeps the bot on its state's node, labelling a node first if none
    holds the state yet."""
    label = state_label(config, state)

    def label_one() -> None:
        with engine_errors("listing the swarm's nodes"):
            nodes = client.api.nodes()
        chosen = None if holder(nodes, label) else choose_node(config, nodes, constraints)
        if chosen is not None:
            with engine_errors(f"labelling node {node_name(chosen, '')} for a state volume"):
                _set_label(client, chosen, label, "true")

    _in_sequence(label_one)
    return pin_constraint(config, state)


def _in_sequence(update: Callable[[], None]) -> None:
    """Run a read-then-update of a node again when another update came in between (Swarm
    refuses an update made at an old version: "update out of sequence")."""
    for attempt in range(UPDATE_TRIES):
        try:
            update()
            return
        except OrchestratorError as exc:
            if "out of sequence" not in str(exc) or attempt == UPDATE_TRIES - 1:
                raise


def unpin_state(client: docker.DockerClient, node_id: str, label: str) -> None:
    """Forget which node held a state (its volume is gone): remove the label, read afresh."""

    def unlabel() -> None:
        with engine_errors("unlabelling a node"):
            try:
                node = client.api.inspect_node(node_id)
            except docker.errors.NotFound:
                return
            _set_label(client, node, label, None)

    _in_sequence(unlabel)

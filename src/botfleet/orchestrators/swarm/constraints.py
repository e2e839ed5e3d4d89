"""A bot's placement as Swarm placement constraints, checked before the bot is stored.

Swarm's own expressions (`<node attribute> ==|!= <value>`, swarmkit's manager/constraint):
`node.id`, `node.hostname`, `node.ip` (an address or a CIDR), `node.role`, `node.platform.os`,
`node.platform.arch`, `node.labels.<key>` and `engine.labels.<key>`; values compared without
regard to case, label keys with it. Swarm accepts an unknown attribute and then places the task
nowhere, and answers a malformed expression with a 500: both are refused here instead, with a
422 `placement_unsupported` that says why. `node_labels` become `node.labels.<k>==<v>`.

`node_matches` is the same test Swarm makes, used to choose the node a new state volume is
pinned to (state.py) among those the bot may run on.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botfleet.orchestrators.base import Placement, PlacementUnsupported

# swarmkit's patterns: a key, and a value that cannot hold an operator.
_KEY = re.compile(r"^[a-z_][a-z0-9\-_.]+$", re.IGNORECASE)
_VALUE = re.compile(r"^[a-z0-9:\-_\s.*()?+\[\]\\^$|/]+$", re.IGNORECASE)
_ATTRIBUTES = (
    "node.id",
    "node.hostname",
    "node.ip",
    "node.role",
    "node.platform.os",
    "node.platform.arch",
)
_LABEL_PREFIXES = ("node.labels.", "engine.labels.")
#: Swarm's operators, in the order it tries them.
OPERATORS = ("==", "!=")
EXAMPLES = "node.labels.zone==a, node.hostname!=n1, node.role==worker"


@dataclass(frozen=True)
class Constraint:
    key: str
    operator: str
    value: str

    def __str__(self) -> str:
        return f"{self.key}{self.operator}{self.value}"


def parse(expression: str) -> Constraint:
    """One constraint, or ValueError saying what is wrong with it."""
    for operator in OPERATORS:
        if operator not in expression:
            continue
        key, _, value = (part.strip() for part in expression.partition(operator))
        if not _KEY.match(key):
            raise ValueError(f"{expression!r}: {key!r} is not a node attribute")
        lowered = key.lower()
        if lowered not in _ATTRIBUTES and not any(
            lowered.startswith(prefix) and len(key) > len(prefix) for prefix in _LABEL_PREFIXES
        ):
            known = ", ".join((*_ATTRIBUTES, "node.labels.<key>", "engine.labels.<key>"))
            raise ValueError(f"{expression!r}: Swarm knows no attribute {key!r} (known: {known})")
        if not _VALUE.match(value):
            raise ValueError(f"{expression!r}: the value {value!r} is empty or not allowed")
        if lowered == "node.ip" and _network(value) is None:
            raise ValueError(f"{expression!r}: {value!r} is not an address or a CIDR")
        return Constraint(key, operator, value)
    raise ValueError(f"{expression!r} is not `<node attribute> == <value>` or `!=`")


def constraints_of(placement: Placement | None) -> list[str]:
    """The placement's constraints in Swarm's words: its own, then its node labels.
    Raises PlacementUnsupported where Swarm could not honour it."""
    if placement is None:
        return []
    if getattr(placement, "datacenters", ()):
        raise PlacementUnsupported(
            "datacenters are Nomad's; on swarm, place bots with node labels or constraints "
            f"({EXAMPLES})"
        )
    rendered: list[str] = []
    try:
        for expression in placement.constraints:
            rendered.append(str(parse(expression)))
        for key, value in placement.node_labels.items():
            rendered.append(str(parse(f"node.labels.{key}=={value}")))
    except ValueError as exc:
        raise PlacementUnsupported(
            f"not a Swarm placement constraint: {exc}; examples: {EXAMPLES}"
        ) from exc
    return rendered


def _network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None


def _node_values(key: str, node: Mapping[str, Any]) -> str:
    """What a node (as `GET /nodes` shows it) holds for the attribute `key` ("" if nothing)."""
    lowered = key.lower()
    description = node.get("Description") or {}
    platform = description.get("Platform") or {}
    simple = {
        "node.id": node.get("ID"),
        "node.hostname": description.get("Hostname"),
        "node.role": (node.get("Spec") or {}).get("Role"),
        "node.platform.os": platform.get("OS"),
        "node.platform.arch": platform.get("Architecture"),
    }
    if lowered in simple:
        return str(simple[lowered] or "")
    if lowered.startswith("node.labels."):
        labels = (node.get("Spec") or {}).get("Labels") or {}
        return str(labels.get(key[len("node.labels.") :], ""))
    labels = (description.get("Engine") or {}).get("Labels") or {}
    return str(labels.get(key[len("engine.labels.") :], ""))


def matches(constraint: Constraint, node: Mapping[str, Any]) -> bool:
    """Whether `node` satisfies `constraint`, as Swarm decides it."""
    if constraint.key.lower() == "node.ip":
        network = _network(constraint.value)
        try:
            address = ipaddress.ip_address((node.get("Status") or {}).get("Addr", ""))
        except ValueError:
            return False
        within = network is not None and address in network
        return within if constraint.operator == "==" else not within
    equal = _node_values(constraint.key, node).casefold() == constraint.value.casefold()
    return equal if constraint.operator == "==" else not equal


def node_matches(constraints: list[str], node: Mapping[str, Any]) -> bool:
    return all(matches(parse(expression), node) for expression in constraints)

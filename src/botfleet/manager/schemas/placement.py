"""A bot's `resources` and `placement` (POST /bots, and a kind's defaults): their shape and
bounds. Whether the manager's backend can honour a placement, and the admin's maxima of
resources, are checked by manager/services/bot_resources.py."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, StringConstraints, field_validator

from botfleet.manager.schemas.bounds import Strict

MAX_CONSTRAINTS = 16
MAX_NODE_LABELS = 16
MAX_DATACENTERS = 16
#: A node label's key: what Swarm's `node.labels.<key>` and Nomad's `${meta.<key>}` both take.
NODE_LABEL_KEY = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$"
#: A node label's value: no spaces, quotes, `=` or `!`, which would change an expression's sense.
NODE_LABEL_VALUE = r"^[A-Za-z0-9_.:/@+\-]{1,200}$"
#: A Nomad datacenter name, or a glob of them (`dc-*`), as BOTFLEET_NOMAD_DATACENTERS takes.
DATACENTER = r"^[A-Za-z0-9_.*?\-]{1,128}$"

#: One engine expression, printable on one line: its syntax is the backend's to check.
Constraint = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=500, strip_whitespace=True, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]
Datacenter = Annotated[str, StringConstraints(pattern=DATACENTER)]


class Resources(Strict):
    """CPU and memory of one bot, in place of the backend's per-bot defaults; each at most
    the admin's maximum (BOTFLEET_MAX_BOT_CPU, BOTFLEET_MAX_BOT_MEMORY_MB)."""

    cpu: float | None = Field(
        None,
        ge=0.01,  # the engines' smallest share; below, Docker's NanoCpus would round to 0: no cap
        le=256,
        description="CPUs, at least 0.01, e.g. 0.5 (a cap; Nomad reserves it in MHz).",
    )
    memory_mb: int | None = Field(None, ge=16, le=1024 * 1024, description="Memory, in MiB.")

    def document(self) -> dict[str, Any]:
        """As stored: the fields given."""
        return self.model_dump(exclude_none=True)


class PlacementRequest(Strict):
    """Where the bot may run, in the backend's own words (swarm, nomad); a backend that places
    nothing (process, docker) refuses any with 422 `placement_unsupported`."""

    constraints: list[Constraint] = Field(
        default_factory=list,
        max_length=MAX_CONSTRAINTS,
        description="Engine expressions every eligible node meets: Swarm's "
        "(`node.labels.zone==a`, `node.hostname!=n1`) or Nomad's `<LTarget> <Operand> "
        "<RTarget>` (`${attr.kernel.name} = linux`).",
    )
    node_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels every eligible node carries (Swarm node labels, Nomad node meta).",
    )
    datacenters: list[Datacenter] = Field(
        default_factory=list,
        max_length=MAX_DATACENTERS,
        description="Nomad only: the datacenters (globs) the bot may run in, in place of "
        "BOTFLEET_NOMAD_DATACENTERS.",
    )

    @field_validator("node_labels")
    @classmethod
    def _node_labels(cls, value: dict[str, str]) -> dict[str, str]:
        return check_node_labels(value)

    def document(self) -> dict[str, Any]:
        """As stored: the parts given (`{}`: anywhere, which replaces a kind's placement)."""
        return {k: v for k, v in self.model_dump().items() if v}


def check_node_labels(value: dict[str, str]) -> dict[str, str]:
    """At most MAX_NODE_LABELS, each key and value safe inside any engine's expression."""
    if len(value) > MAX_NODE_LABELS:
        raise ValueError(f"at most {MAX_NODE_LABELS} node labels")
    for key, text in value.items():
        if not re.fullmatch(NODE_LABEL_KEY, key):
            raise ValueError(f"node label key {key!r} must match {NODE_LABEL_KEY}")
        if not re.fullmatch(NODE_LABEL_VALUE, text):
            raise ValueError(f"node label {key!r}: its value must match {NODE_LABEL_VALUE}")
    return value

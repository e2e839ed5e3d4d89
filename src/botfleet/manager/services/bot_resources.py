"""A bot's resources and placement: the admin's maxima, what the backend can honour, and what
a launch gets from the bot and its kind.

A bot's own `resources` override its kind's field by field; its own `placement` replaces its
kind's whole (`{}`: anywhere). Both are checked before anything is stored: resources against
BOTFLEET_MAX_BOT_CPU / BOTFLEET_MAX_BOT_MEMORY_MB (422 `resources_over_limit`, a kind's when it
is registered), placement against the manager's backend (422 `placement_unsupported`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botfleet.manager.core.errors import ErrorCode, Invalid
from botfleet.orchestrators.base import Orchestrator, Placement, PlacementUnsupported, Resources


def merged_resources(
    own: Mapping[str, Any] | None, kind: Mapping[str, Any] | None
) -> Resources | None:
    """The bot's own CPU and memory over its kind's, field by field; None: the defaults."""
    merged = {**(kind or {}), **{k: v for k, v in (own or {}).items() if v is not None}}
    return Resources.of(merged)


def chosen_placement(
    own: Mapping[str, Any] | None, kind: Mapping[str, Any] | None
) -> Placement | None:
    """The bot's own placement when it named one (`{}` included), else its kind's."""
    return Placement.of(own if own is not None else kind)


@dataclass(frozen=True)
class StartLimits:
    """What a bot (or a kind) may ask for here: the admin's maxima and the backend's reach."""

    max_cpu: float
    max_memory_mb: int
    orchestrator: Orchestrator

    def check_resources(self, resources: Mapping[str, Any] | None, *, of: str = "a bot") -> None:
        """422 `resources_over_limit` naming the maximum when a field is over it."""
        if not resources:
            return
        cpu, memory = resources.get("cpu"), resources.get("memory_mb")
        if cpu is not None and cpu > self.max_cpu:
            raise Invalid(
                ErrorCode.RESOURCES_OVER_LIMIT,
                f"resources.cpu {cpu:g} is over the maximum of {self.max_cpu:g} CPUs for {of} "
                "here (BOTFLEET_MAX_BOT_CPU)",
                errors=[{"path": "/resources/cpu", "message": f"at most {self.max_cpu:g}"}],
            )
        if memory is not None and memory > self.max_memory_mb:
            raise Invalid(
                ErrorCode.RESOURCES_OVER_LIMIT,
                f"resources.memory_mb {memory} is over the maximum of {self.max_memory_mb} MiB "
                f"for {of} here (BOTFLEET_MAX_BOT_MEMORY_MB)",
                errors=[
                    {"path": "/resources/memory_mb", "message": f"at most {self.max_memory_mb}"}
                ],
            )

    def check_placement(self, placement: Placement | None) -> None:
        """422 `placement_unsupported`, with the backend's reason, unless it can honour it."""
        if placement is None:
            return
        try:
            self.orchestrator.check_placement(placement)
        except PlacementUnsupported as exc:
            raise Invalid(ErrorCode.PLACEMENT_UNSUPPORTED, str(exc)) from exc

    def check_kind(self, document: Mapping[str, Any]) -> None:
        """A kind's own resources and placement, when it is registered (or a new version)."""
        self.check_resources(document.get("resources"), of="a kind's bots")
        self.check_placement(Placement.of(document.get("placement")))

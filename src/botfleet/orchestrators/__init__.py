"""Orchestrator backends and their registry (name → class).

Backends are imported lazily by name, so a missing engine SDK (docker, python-nomad) never breaks
the ones that do not need it. Each is built with `Orchestrator.from_settings` (base.py) from its
own settings model (`config_class`) plus the stop budget the manager owns (config.py).
"""

from __future__ import annotations

import importlib

from botfleet.orchestrators.base import (
    LABEL_ATTEMPT,
    LABEL_BOT_ID,
    LABEL_MANAGED,
    LABEL_USER_ID,
    BackendUnavailable,
    CapabilityNotSupported,
    LaunchFailed,
    LaunchSpec,
    Orchestrator,
    OrchestratorError,
    Workload,
    WorkloadNotFound,
    WorkloadState,
    WorkloadStatus,
)

#: Backend name (as in settings) -> "module:Class".
BACKENDS: dict[str, str] = {
    "process": "botfleet.orchestrators.process:ProcessOrchestrator",
    "docker": "botfleet.orchestrators.docker:DockerOrchestrator",
    "nomad": "botfleet.orchestrators.nomad:NomadOrchestrator",
    "swarm": "botfleet.orchestrators.swarm:SwarmOrchestrator",
}


def backend_class(name: str) -> type[Orchestrator]:
    """The backend class registered under `name`, imported on first use."""
    try:
        target = BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise ValueError(f"unknown orchestrator backend {name!r}; known: {known}") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = [
    "BACKENDS",
    "LABEL_ATTEMPT",
    "LABEL_BOT_ID",
    "LABEL_MANAGED",
    "LABEL_USER_ID",
    "BackendUnavailable",
    "CapabilityNotSupported",
    "LaunchFailed",
    "LaunchSpec",
    "Orchestrator",
    "OrchestratorError",
    "Workload",
    "WorkloadNotFound",
    "WorkloadState",
    "WorkloadStatus",
    "backend_class",
]

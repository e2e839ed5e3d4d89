"""Build the configured orchestrator backend from the manager's settings."""

from __future__ import annotations

from manager.config import Settings
from orchestrators.base import Orchestrator


def create_orchestrator(settings: Settings) -> Orchestrator:
    if settings.orchestrator == "process":
        from orchestrators.process import ProcessOrchestrator, ProcessOrchestratorConfig

        return ProcessOrchestrator(ProcessOrchestratorConfig(data_dir=settings.data_dir))
    raise ValueError(
        f"the {settings.orchestrator!r} backend is not available in this version; "
        "use BOTFLEET_ORCHESTRATOR=process"
    )

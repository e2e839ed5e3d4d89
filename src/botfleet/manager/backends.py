"""Build the configured orchestrator backend.

Each backend reads its own settings (`BOTFLEET_<BACKEND>_*`, its `config_class`); the manager
hands down only what it owns: the data folder and the stop budget (`Orchestrator.from_settings`).
"""

from __future__ import annotations

from botfleet.manager.core.settings import Settings
from botfleet.orchestrators import backend_class
from botfleet.orchestrators.base import Orchestrator


def create_orchestrator(settings: Settings) -> Orchestrator:
    return backend_class(settings.orchestrator).from_settings(settings)

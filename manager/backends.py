"""Build the configured orchestrator backend.

Each backend reads its own settings (`BOTFLEET_<BACKEND>_*`, see its config class); the manager
only fills in what it owns, such as the data folder.
"""

from __future__ import annotations

from typing import Any

from manager.config import Settings
from orchestrators import backend_class
from orchestrators.base import Orchestrator


def create_orchestrator(settings: Settings) -> Orchestrator:
    cls: Any = backend_class(settings.orchestrator)
    shared = {"data_dir": settings.data_dir}
    fields = cls.config_class.model_fields
    return cls(cls.config_class(**{k: v for k, v in shared.items() if k in fields}))  # type: ignore[no-any-return]

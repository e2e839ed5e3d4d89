"""What every backend's settings share: the stop budget, handed down by the manager.

Each backend has a pydantic settings model (`BOTFLEET_<BACKEND>_*`) whose field descriptions
document its settings. The stop budget is not one of them: it is the manager's
`BOTFLEET_STOP_GRACE_S` / `BOTFLEET_KILL_AFTER_S` (manager/core/settings/bots.py), filled in by
`from_manager`, so a backend's SIGTERM → SIGKILL timeout never disagrees with the grace the bot
was promised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Self

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from botfleet.orchestrators.log_tail import LogLimits


class ManagerSettings(Protocol):
    """The part of the manager's settings a backend reads (the manager's Settings has it)."""

    data_dir: Path
    stop_grace_s: float
    kill_after_s: float
    log_tail_max_bytes: int
    log_line_max_bytes: int
    log_file_max_bytes: int
    log_files: int


class BackendConfig(BaseSettings):
    """Base of every backend's settings model."""

    model_config = SettingsConfigDict(extra="ignore")

    stop_grace_s: float = Field(
        30.0,
        ge=0,
        description="SIGTERM → SIGKILL timeout where the engine applies one itself (Nomad's "
        "KillTimeout); set from BOTFLEET_STOP_GRACE_S by the manager.",
    )
    kill_wait_s: float = Field(
        5.0,
        ge=0,
        description="How long to wait after SIGKILL for the workload to vanish before giving up; "
        "set from BOTFLEET_KILL_AFTER_S by the manager.",
    )

    log_tail_max_bytes: int = Field(
        1_048_576,
        ge=1024,
        description="Most bytes a log tail answers.",
    )
    log_line_max_bytes: int = Field(
        16_384, ge=256, description="Longer log lines are cut (BOTFLEET_LOG_LINE_MAX_BYTES)."
    )
    log_file_max_bytes: int = Field(
        10_485_760, ge=65_536, description="A bot's log file is rotated at this size."
    )
    log_files: int = Field(3, ge=1, description="Log files kept per bot, the current one included.")

    def log_limits(self) -> LogLimits:
        return LogLimits(self.log_tail_max_bytes, self.log_line_max_bytes)

    @classmethod
    def from_manager(cls, settings: ManagerSettings) -> Self:
        """This backend's settings (from its environment) plus what the manager owns."""
        owned: dict[str, Any] = {
            "data_dir": settings.data_dir,
            "stop_grace_s": settings.stop_grace_s,
            "kill_wait_s": settings.kill_after_s,
            "log_tail_max_bytes": settings.log_tail_max_bytes,
            "log_line_max_bytes": settings.log_line_max_bytes,
            "log_file_max_bytes": settings.log_file_max_bytes,
            "log_files": settings.log_files,
        }
        return cls(**{k: v for k, v in owned.items() if k in cls.model_fields})

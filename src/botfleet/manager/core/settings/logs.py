"""Bot logs: how much one answer carries and how much each backend keeps on disk.

orchestrators/log_tail.py caps them; each backend rotates its own files.
"""

from __future__ import annotations

from pydantic import Field

from botfleet.manager.core.settings.area import SettingsArea


class LogSettings(SettingsArea):
    log_tail_max_bytes: int = Field(
        1_048_576, ge=1024, description="Most bytes one `GET /bots/{id}/logs` answers."
    )
    log_line_max_bytes: int = Field(
        16_384,
        ge=256,
        description="Longer log lines are cut, ending with `… [truncated N bytes]`.",
    )
    log_file_max_bytes: int = Field(
        10_485_760,
        ge=65_536,
        description="Size at which a bot's log file is rotated (process: by housekeeping; "
        "docker: json-file max-size; nomad: MaxFileSizeMB, at least 1 MiB).",
    )
    log_files: int = Field(3, ge=1, description="Log files kept per bot, the current one included.")

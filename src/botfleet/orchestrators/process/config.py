"""Settings of the process backend (environment: `BOTFLEET_PROCESS_*`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from botfleet.orchestrators.config import BackendConfig


class ProcessOrchestratorConfig(BackendConfig):
    """Settings of the process backend (environment: `BOTFLEET_PROCESS_*`)."""

    model_config = SettingsConfigDict(env_prefix="BOTFLEET_PROCESS_", extra="ignore")

    data_dir: Path = Field(
        description="Directory holding workload records (workloads/) and bot logs (logs/)."
    )
    command: list[str] = Field(
        default_factory=lambda: [sys.executable, "-m", "botfleet.runtime"],
        min_length=1,
        description="Command that starts one bot; it gets the bot's environment and no arguments.",
    )
    bot_uids: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Run each bot under an unprivileged uid of its own. `auto`: when the manager "
        "is root and a probe shows such a uid can run the bot command (else a warning, and bots "
        "run as the manager's user); `on`: required, launches fail with isolation_unavailable "
        "when impossible; `off`: bots run as the manager's user (trusted bots only).",
    )
    uid_base: int = Field(200000, ge=1000, description="First uid of the bots' dedicated range.")
    uid_count: int = Field(10000, ge=1, description="How many uids the range holds.")
    gid: int | None = Field(
        None, ge=1000, description="Primary gid of every bot (no supplementary groups); uid_base."
    )
    work_root: Path | None = Field(
        None,
        description="Where each bot's working directory (its HOME) is made. Default "
        "/var/lib/botfleet/bots with bot uids (never inside the 0700 data folder), else "
        "<data_dir>/bots.",
    )
    state_root: Path | None = Field(
        None,
        description="Where bots' persistent directories (`state_key`) are kept, one per user "
        "and key. Default /var/lib/botfleet/state with bot uids (bot uids cannot enter the "
        "0700 data folder), else <data_dir>/state.",
    )
    rlimit_as_mb: int = Field(
        2048, ge=0, description="RLIMIT_AS (address space) of each bot in MiB; 0: unchanged."
    )
    rlimit_nproc: int = Field(
        256,
        ge=0,
        description="RLIMIT_NPROC (processes and threads) of each bot; only with bot uids, "
        "where the count is the bot's own; 0: unchanged.",
    )
    rlimit_nofile: int = Field(1024, ge=0, description="RLIMIT_NOFILE of each bot; 0: unchanged.")
    nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Scheduling niceness added to each bot: when bots keep every CPU busy (a "
        "burst of runtimes starting), the manager's API, launches and callbacks still come "
        "first; bots get every cycle the manager leaves. 0: the manager's own priority.",
    )

    @property
    def bot_gid(self) -> int:
        return self.uid_base if self.gid is None else self.gid

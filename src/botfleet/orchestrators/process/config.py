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
        "is root (a manager that is not root runs bots as its own user); a root manager whose "
        "probe shows such a uid cannot run the bot command refuses launches "
        "(isolation_unavailable) rather than run bots as root; `on`: required, also refused "
        "when the manager is not root; `off`: bots run as the manager's user (trusted bots "
        "only).",
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
    cgroups: Literal["auto", "on", "off"] = Field(
        "auto",
        description="A cgroup per bot (memory for all its processes, pids, CPU and IO weight; "
        "stop kills every process in it). `auto`: where one can be made (a delegated cgroup v2 "
        "subtree, else writable cgroup v1 hierarchies), else per-process rlimits only; `on`: "
        "required, launches fail with isolation_unavailable (and /readyz answers 503) where "
        "none can be made; `off`: per-process rlimits only.",
    )
    cgroup_parent: Path | None = Field(
        None,
        description="A cgroup v2 directory delegated to the manager (it offers memory and "
        "pids), under which bots' cgroups are made (`botfleet/<scope>/<bot>`). Default: the "
        "manager's own cgroup (it moves itself into a `botfleet-manager` leaf when v2 requires "
        "it), else its own cgroup in each v1 hierarchy.",
    )
    rlimit_as_mb: int = Field(
        2048,
        ge=0,
        description="Memory of each bot in MiB. With cgroups: all its processes together "
        "(memory.max, no swap; over it the kernel's OOM killer ends the bot, `out_of_memory`). "
        "Without: RLIMIT_AS (address space) of each of its processes. 0: unlimited.",
    )
    rlimit_nproc: int = Field(
        256,
        ge=0,
        description="Processes and threads of each bot. With cgroups: pids.max of its cgroup; "
        "and with bot uids also RLIMIT_NPROC, whose count is the bot uid's own. 0: unlimited.",
    )
    cpu_weight: int = Field(
        100,
        ge=1,
        le=10000,
        description="Each bot's CPU weight in its cgroup (cpu.weight; v1 cpu.shares = weight "
        "x 10.24): bots share contended CPUs in proportion.",
    )
    io_weight: int = Field(
        100,
        ge=1,
        le=10000,
        description="Each bot's IO weight (io.weight; v1 blkio.weight, 10..1000), where the "
        "kernel's IO scheduler offers one (else not set).",
    )
    rlimit_nofile: int = Field(1024, ge=0, description="RLIMIT_NOFILE of each bot; 0: unchanged.")
    tmp_mb: int = Field(
        64,
        ge=0,
        description="Size in MiB of each bot's private /tmp, and of its private /dev/shm: "
        "tmpfs mounted in a mount namespace of the bot's own (util-linux `unshare`; the manager "
        "must be root, else a warning and bots share the host's). A bot writing more gets "
        "ENOSPC; what it leaves there goes with it. 0: bots share the host's /tmp and /dev/shm.",
    )
    nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Scheduling niceness added to each bot: when bots keep every CPU busy (a "
        "burst of runtimes starting), the manager's API, launches and callbacks still come "
        "first; bots get every cycle the manager leaves. 0: the manager's own priority.",
    )

    kind_env_root: Path | None = Field(
        None,
        description="Where the virtualenvs of kinds with a `package` are built, one per kind "
        "and version (orchestrators/process/kind_envs.py). Default /var/lib/botfleet/kind-envs "
        "when the manager is root (bot uids must read them: 0755, root-owned), else "
        "<data_dir>/kind-envs.",
    )
    kind_env_timeout_s: float = Field(
        300,
        gt=0,
        description="Longest a kind's virtualenv build may take (venv, pip install, check); "
        "pip is then killed and the build fails with kind_env_failed.",
    )
    kind_env_max_mb: int = Field(
        1024,
        ge=0,
        description="Largest a kind's virtualenv may grow, in MiB: a build over it is stopped, "
        "removed and fails with kind_env_failed. 0: unlimited.",
    )

    @property
    def bot_gid(self) -> int:
        return self.uid_base if self.gid is None else self.gid

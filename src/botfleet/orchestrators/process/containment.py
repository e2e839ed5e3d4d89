"""The process backend's containment decision: cgroups per bot or per-process rlimits, and
what it says about itself (/readyz, the start banner, launches it refuses).

`BOTFLEET_PROCESS_CGROUPS`: `auto` uses a cgroup per bot where one can be made and otherwise
runs bots with per-process rlimits only; `on` refuses every launch (`isolation_unavailable`)
where none can be made; `off` never makes one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from botfleet.orchestrators.base import BackendUnavailable, LaunchFailed, LaunchSpec, Resources
from botfleet.orchestrators.process import cgroups
from botfleet.orchestrators.process.cgroups import Cgroup, CgroupTree
from botfleet.orchestrators.process.config import ProcessOrchestratorConfig

log = logging.getLogger(__name__)

#: The reason a bot's end gets when the kernel's OOM killer ended any of its processes (the
#: docker backend's OOMKilled is the same end).
OUT_OF_MEMORY = "out_of_memory"
RLIMITS = "rlimits"


class BotCgroups:
    """Detected once per backend instance, on first use."""

    def __init__(self, config: ProcessOrchestratorConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._decided = False
        self._tree: CgroupTree | None = None
        self._why_not = ""

    def tree(self) -> CgroupTree | None:
        with self._lock:
            if not self._decided:
                self._tree, self._why_not = self._decide()
                self._decided = True
            return self._tree

    def _decide(self) -> tuple[CgroupTree | None, str]:
        if self.config.cgroups == "off":
            return None, "turned off (BOTFLEET_PROCESS_CGROUPS=off)"
        found = cgroups.detect(self.config.cgroup_parent, self.config.data_dir)
        if isinstance(found, CgroupTree):
            log.info("process backend: each bot runs in a %s of its own (%s)",
                     found.name, self.describe_limits())  # fmt: skip
            return found, ""
        if self.config.cgroups == "auto":
            log.warning(
                "process backend: no cgroup per bot (%s); bots run with per-process rlimits "
                "only: the processes of one bot together may use more memory than "
                "BOTFLEET_PROCESS_RLIMIT_AS_MB. Set BOTFLEET_PROCESS_CGROUPS=on to refuse "
                "launches instead.",
                found,
            )
        return None, found

    def describe_limits(self) -> str:
        c = self.config
        return (
            f"memory {c.rlimit_as_mb or 'unlimited'} MiB, {c.rlimit_nproc or 'unlimited'} pids, "
            f"cpu weight {c.cpu_weight}, io weight {c.io_weight}"
        )

    def mode(self) -> str:
        """`cgroup_v2`, `cgroup_v1`, `rlimits`, or `refused` (`on` without cgroups)."""
        tree = self.tree()
        if tree is not None:
            return tree.name
        return "refused" if self.config.cgroups == "on" else RLIMITS

    def why_not(self) -> str:
        self.tree()
        return self._why_not

    def check(self) -> None:
        """BackendUnavailable when cgroups are required and cannot be made (for /readyz)."""
        if self.mode() == "refused":
            raise BackendUnavailable(self._refusal())

    def _refusal(self) -> str:
        return (
            "bots must run in cgroups of their own (BOTFLEET_PROCESS_CGROUPS=on) and none can "
            f"be made: {self._why_not}. Delegate a cgroup v2 subtree with the memory and pids "
            "controllers (BOTFLEET_PROCESS_CGROUP_PARENT), or set BOTFLEET_PROCESS_CGROUPS=auto "
            "to run bots with per-process limits only"
        )

    def limits(self, resources: Resources | None = None) -> cgroups.Limits:
        """The backend's per-bot limits, with a kind's own memory and CPU cap in their place."""
        c = self.config
        memory_mb = (resources.memory_mb if resources else None) or c.rlimit_as_mb
        cpu_max = (resources.cpu if resources else None) or 0.0
        return cgroups.Limits(
            memory_mb * 1024 * 1024, c.rlimit_nproc, c.cpu_weight, c.io_weight, cpu_max
        )

    def create(self, spec: LaunchSpec) -> Cgroup | None:
        """The launch's cgroup (None: rlimits only); LaunchFailed when it must and cannot be."""
        tree = self.tree()
        if tree is None:
            if self.config.cgroups == "on":
                raise LaunchFailed(self._refusal(), code="isolation_unavailable")
            return None
        try:
            limits = self.limits(spec.resources)
            return tree.create(cgroups.leaf_name(spec.bot_id, spec.attempt), limits)
        except OSError as exc:
            raise LaunchFailed(
                f"cannot make the bot's cgroup under {tree.scopes}: {exc}",
                code="isolation_unavailable",
            ) from exc


def of_record(record: Mapping[str, Any]) -> Cgroup | None:
    return Cgroup.from_record(record.get("cgroup"))


def kill_all(record: Mapping[str, Any]) -> None:
    """SIGKILL every process of the workload's cgroup (none without one)."""
    cgroup = of_record(record)
    if cgroup is not None and not cgroup.kill():
        log.warning("processes of cgroup %s survived SIGKILL", cgroup.memory_dir)


def remove(record: Mapping[str, Any]) -> None:
    cgroup = of_record(record)
    if cgroup is not None:
        cgroup.remove()


def describe(config: ProcessOrchestratorConfig) -> str:
    """One line for the start banner: what fences each bot in."""
    from botfleet.orchestrators.process.uids import BotUids

    own_uid: bool | None
    try:
        own_uid = BotUids(config).enabled()
    except LaunchFailed:
        own_uid = None
    cgroup_part = BotCgroups(config)
    mode = cgroup_part.mode()
    if mode == "refused":
        resources = f"NONE: launches refused ({cgroup_part.why_not()})"
    elif mode == RLIMITS:
        resources = f"per-process rlimits only ({cgroup_part.why_not()})"
    else:
        resources = f"a {mode} per bot ({cgroup_part.describe_limits()})"
    if own_uid is None:
        identity = "launches refused: bots cannot get uids of their own"
    else:
        identity = "own uid per bot" if own_uid else "the manager's own user"
    return f"{resources}; {identity}"

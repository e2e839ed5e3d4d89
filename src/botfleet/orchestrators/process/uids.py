"""Whether bots run under uids of their own, the pool of those uids, and what a bot leaves behind.

When the manager is root (and a probe shows an unprivileged uid can run the bot command), each
bot gets a uid of the dedicated range with its own working directory (`uid_pool` claims both
atomically); otherwise bots share the manager's user, for development and trusted bots only.
Stop and remove kill the bot's process group and, with its own uid, every process of that uid
(setsid escapes a group, never a uid); removal then deletes what the uid left in the shared
places and its IPC objects before the uid is freed (`release`).
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from botfleet.orchestrators import process_isolation as isolation
from botfleet.orchestrators.base import LaunchFailed, OrchestratorError
from botfleet.orchestrators.process.config import ProcessOrchestratorConfig
from botfleet.orchestrators.process.spawn import inherited_env
from botfleet.orchestrators.process.uid_pool import UidClaims

log = logging.getLogger(__name__)


def kill_group(pgid: int, starttime: int, sig: signal.Signals) -> None:
    try:
        isolation.kill_group(pgid, starttime, sig)
    except PermissionError as exc:
        raise OrchestratorError(f"not allowed to signal process group {pgid}: {exc}") from exc


class BotUids:
    """The bot-uid decision (probed once per backend instance) and the claims on the range."""

    def __init__(self, config: ProcessOrchestratorConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._decision: tuple[bool, str] | None = None  # (bot uids on, why not)
        # also for a restarted manager removing its predecessor's bots before any launch
        self._claims = UidClaims(
            self.work_root(True),
            config.uid_base,
            config.uid_count,
            config.bot_gid,
            keep=(config.state_root or isolation.DEFAULT_STATE_ROOT,),
        )

    def limits(self, *, own_uid: bool, memory_mb: int | None = None) -> dict[int, int]:
        """RLIMIT_NPROC counts every process of a uid: only a bot's own uid makes it per bot.
        `memory_mb`: a kind's own memory in place of BOTFLEET_PROCESS_RLIMIT_AS_MB."""
        wanted = {
            resource.RLIMIT_AS: (memory_mb or self.config.rlimit_as_mb) * 1024 * 1024,
            resource.RLIMIT_NOFILE: self.config.rlimit_nofile,
        }
        if own_uid:
            wanted[resource.RLIMIT_NPROC] = self.config.rlimit_nproc
        return isolation.clamp_limits(wanted)

    def enabled(self) -> bool:
        """Whether bots run under their own uids; decided (and probed) on first use. Raises
        LaunchFailed (`isolation_unavailable`) when they must and cannot: `bot_uids=on`, or
        `auto` in a root manager (which would otherwise run bots as root)."""
        with self._lock:
            if self._decision is None:
                self._decision = self._decide()
            enabled, why_not = self._decision
        mode = self.config.bot_uids
        if not enabled and (mode == "on" or (mode == "auto" and os.geteuid() == 0)):
            raise LaunchFailed(
                f"bots cannot run under their own uids (BOTFLEET_PROCESS_BOT_UIDS={mode}): "
                f"{why_not}; set BOTFLEET_PROCESS_BOT_UIDS=off to run trusted bots as the "
                "manager's user",
                code="isolation_unavailable",
            )
        return enabled

    def _decide(self) -> tuple[bool, str]:
        mode = self.config.bot_uids
        if mode == "off":
            return False, "turned off (BOTFLEET_PROCESS_BOT_UIDS=off)"
        if os.geteuid() != 0:
            why = "the manager is not root, so it cannot switch a bot to another uid"
            if mode == "auto":
                log.warning(
                    "process backend: bots run as the manager's own user (%s); they can read "
                    "each other's processes and the manager's files: run trusted bots only",
                    why,
                )
            return False, why
        prefix = isolation.prlimit_prefix(self.limits(own_uid=True)) or []
        probe_uid = self.config.uid_base + self.config.uid_count - 1
        why_not = isolation.probe_as_uid(
            [*prefix, self.config.command[0], "-c", "import botfleet.runtime"],
            uid=probe_uid,
            gid=self.config.bot_gid,
            env=inherited_env(),
        )
        if why_not is None:
            log.info(
                "process backend: each bot runs under its own uid (%d..%d, gid %d)",
                self.config.uid_base,
                self.config.uid_base + self.config.uid_count - 1,
                self.config.bot_gid,
            )
            return True, ""
        if mode == "auto":
            log.warning(
                "process backend: bots CANNOT run under their own uids, so every launch is "
                "refused (as root they could read every other bot and the manager's secrets). "
                "The probe failed: %s. Fix: let gid %d traverse every directory above the "
                "interpreter and the installed botfleet (e.g. `setfacl -m g:%d:x <dir>`, see "
                "docs/explanation/security.md), or set BOTFLEET_PROCESS_BOT_UIDS=off to run "
                "trusted bots as root.",
                why_not,
                self.config.bot_gid,
                self.config.bot_gid,
            )
        return False, why_not

    def work_root(self, own_uid: bool) -> Path:
        if self.config.work_root is not None:
            return self.config.work_root
        return isolation.DEFAULT_ISOLATED_WORK_ROOT if own_uid else self.config.data_dir / "bots"

    def workdir(self, bot_id: str, own_uid: bool) -> tuple[int | None, Path]:
        """The bot's own working directory, and its uid when it gets one."""
        root = self.work_root(own_uid)
        if own_uid:
            return self._claims.claim()
        isolation.private_dir(root)
        return None, Path(tempfile.mkdtemp(prefix=f"{bot_id}-", dir=root))

    def sweep(self, record: Mapping[str, Any]) -> None:
        """Kill what a bot left behind: its process group and, with its own uid, every process of
        that uid. A uid whose processes survive stays busy (it is never handed out again until a
        scan finds it free)."""
        kill_group(record["pid"], record["starttime"], signal.SIGKILL)
        uid = record.get("uid")
        if uid is not None and not isolation.kill_uid(uid):
            log.warning("processes of bot uid %s survived SIGKILL", uid)
            self._claims.taint(uid)

    def release(self, record: Mapping[str, Any]) -> None:
        """Before a removed bot's uid is freed: `sweep`, then delete the uid's files in the
        shared places and its SysV IPC objects, so the next bot given the uid finds nothing of
        this one. A uid something of which survives is tainted (and logged)."""
        self.sweep(record)
        uid = record.get("uid")
        if uid is not None:
            self._claims.clean(uid)

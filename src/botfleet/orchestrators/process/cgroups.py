"""One cgroup per bot: memory for all its processes, pids, CPU and IO weight, and a kill that
reaches every process it started, wherever it moved (setsid, double fork).

Detected once per backend: a cgroup v2 subtree where memory and pids can be delegated (the
`cgroup_parent` setting, else the manager's own cgroup), else cgroup v1 hierarchies with memory
and pids the manager may write (under its own cgroup in each), else none. Each bot's cgroup is
`<parent>/botfleet/<scope>/<leaf>` (`scope`: this manager's data folder, so managers sharing a
host never meet; `leaf`: one launch). The bot enters it before its first instruction: a shell
prefix, run as root before the uid switch, writes its own pid into `cgroup.procs` and execs the
rest of the command (`enter_prefix`). Over memory the kernel's OOM killer acts; v2 kills the
whole cgroup (`memory.oom.group`), and on v1 the backend ends the rest when it next looks
(`Cgroup.oom_kills`), so a bot always ends as a whole.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

V2_MOUNT = Path("/sys/fs/cgroup")
#: v1 hierarchies: the ones a bot's cgroup needs, then the ones used where present.
V1_REQUIRED = ("memory", "pids")
V1_OPTIONAL = ("cpu", "blkio", "freezer")
_KILL_ROUNDS = 50
#: The CFS period a CPU cap is a quota of (the kernel's default, 100 ms).
CPU_PERIOD_US = 100_000
_UNIFIED = "unified"


@dataclass(frozen=True)
class Limits:
    """What one bot may use; 0 leaves that limit out."""

    memory_bytes: int
    pids: int
    cpu_weight: int
    io_weight: int
    #: A hard cap in CPUs (a kind's `resources.cpu`): the CFS quota per period.
    cpu_max: float = 0.0


# -- one bot's cgroup ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cgroup:
    """One bot's cgroup: its directory in each hierarchy (v2: one, `unified`)."""

    version: int
    dirs: Mapping[str, Path]

    def to_record(self) -> dict[str, Any]:
        return {"version": self.version, "dirs": {k: str(v) for k, v in self.dirs.items()}}

    @classmethod
    def from_record(cls, data: Mapping[str, Any] | None) -> Cgroup | None:
        if not data:
            return None
        return cls(int(data["version"]), {k: Path(v) for k, v in data["dirs"].items()})

    @property
    def memory_dir(self) -> Path:
        return self.dirs[_UNIFIED if self.version == 2 else "memory"]

    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs.values()]

    def pids(self) -> set[int]:
        """Every live process in the cgroup (any of its hierarchies); none once removed."""
        found: set[int] = set()
        for path in self.procs_files():
            with suppress(FileNotFoundError):
                found |= {int(line) for line in path.read_text().split()}
        return found

    def oom_kills(self) -> int:
        """How many of its processes the kernel's OOM killer ended (0 when unknown)."""
        name, key = (
            ("memory.events", "oom_kill")
            if self.version == 2
            else ("memory.oom_control", "oom_kill")
        )
        try:
            text = (self.memory_dir / name).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == key:
                return int(parts[1])
        return 0

    def kill(self) -> bool:
        """SIGKILL every process in the cgroup until none is left; True when none is."""
        kill_file = self.dirs.get(_UNIFIED, Path("/nonexistent")) / "cgroup.kill"
        if kill_file.exists():
            with suppress(FileNotFoundError):
                kill_file.write_text("1")
        for _ in range(_KILL_ROUNDS):
            pids = self.pids()
            if not pids:
                return True
            self._freeze(True)  # a fork loop cannot add processes while it is frozen
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self._freeze(False)  # frozen tasks die once thawed
            time.sleep(0.02)
        return not self.pids()

    def _freeze(self, frozen: bool) -> None:
        if self.version == 2:
            path, value = self.dirs[_UNIFIED] / "cgroup.freeze", "1" if frozen else "0"
        elif "freezer" in self.dirs:
            path, value = self.dirs["freezer"] / "freezer.state", "FROZEN" if frozen else "THAWED"
        else:
            return
        with suppress(OSError):
            path.write_text(value)

    def remove(self) -> None:
        """Kill what is left and remove its directories (and its scope's, once empty)."""
        self.kill()
        for path in self.dirs.values():
            for _ in range(_KILL_ROUNDS):  # a killed process leaves its cgroup a moment later
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        raise
                    time.sleep(0.02)
            with suppress(OSError):
                path.parent.rmdir()  # the scope, when this was its last bot


def enter_prefix(cgroup: Cgroup) -> list[str]:
    """`sh -c '<write $$ into each cgroup.procs>; exec "$@"' ... --`: the bot's first process
    is inside its cgroup before anything of the bot runs (run as root, before the uid switch;
    a prefix list, so other prefixes compose around it)."""
    script = (
        'while [ "$1" != -- ]; do echo $$ > "$1" || '
        '{ echo "botfleet: cannot enter the cgroup $1" >&2; exit 125; }; shift; done; '
        'shift; exec "$@"'
    )
    shell = shutil.which("sh") or "/bin/sh"
    return [shell, "-c", script, "botfleet-cgroup", *map(str, cgroup.procs_files()), "--"]


# -- where bots' cgroups are made ---------------------------------------------------------------


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _write_if_there(path: Path, value: str) -> None:
    if path.exists():
        _write(path, value)


def _controllers(path: Path, name: str) -> set[str]:
    try:
        return set((path / name).read_text().split())
    except OSError:
        return set()


def scope_name(data_dir: Path) -> str:
    """This manager's folder of cgroups: one per data folder, stable across restarts."""
    return "m-" + hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]


def leaf_name(bot_id: str, attempt: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", bot_id)[:64]
    return f"{safe}-{attempt}-{secrets.token_hex(4)}"


def own_cgroup(hierarchy: str, proc_cgroup: str | None = None) -> str | None:
    """The manager's cgroup path in one hierarchy (`""`: v2's), from /proc/self/cgroup."""
    text = proc_cgroup if proc_cgroup is not None else Path("/proc/self/cgroup").read_text()
    for line in text.splitlines():
        _id, names, path = line.split(":", 2)
        if (hierarchy == "" and _id == "0" and names == "") or hierarchy in names.split(","):
            return path
    return None


class CgroupTree:
    """Where this manager makes its bots' cgroups: the scope's directory in each hierarchy."""

    def __init__(self, version: int, scopes: Mapping[str, Path]) -> None:
        self.version = version
        self.scopes = dict(scopes)

    @property
    def name(self) -> str:
        return f"cgroup_v{self.version}"

    def create(self, leaf: str, limits: Limits) -> Cgroup:
        """Make one bot's cgroup with its limits; OSError when it cannot be."""
        dirs: dict[str, Path] = {}
        try:
            for hierarchy, scope in self.scopes.items():
                if self.version == 2:
                    enable_v2_subtree(scope)
                else:
                    scope.mkdir(parents=True, exist_ok=True)
                path = scope / leaf
                path.mkdir()
                dirs[hierarchy] = path
            cgroup = Cgroup(self.version, dirs)
            if self.version == 2:
                _limit_v2(dirs[_UNIFIED], limits)
            else:
                _limit_v1(dirs, limits)
        except OSError:
            for path in dirs.values():
                with suppress(OSError):
                    path.rmdir()
            raise
        return cgroup


def _limit_v2(path: Path, limits: Limits) -> None:
    if limits.memory_bytes:
        _write(path / "memory.max", str(limits.memory_bytes))
        _write_if_there(path / "memory.swap.max", "0")
    _write(path / "memory.oom.group", "1")  # over memory, the bot ends as a whole
    if limits.pids:
        _write(path / "pids.max", str(limits.pids))
    if limits.cpu_weight:
        _write_if_there(path / "cpu.weight", str(limits.cpu_weight))
    if limits.cpu_max:
        _write_if_there(path / "cpu.max", f"{_quota_us(limits.cpu_max)} {CPU_PERIOD_US}")
    if limits.io_weight:
        _write_if_there(path / "io.weight", str(limits.io_weight))


def _limit_v1(dirs: Mapping[str, Path], limits: Limits) -> None:
    memory = dirs["memory"]
    if limits.memory_bytes:
        _write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
        _write_if_there(memory / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
    if limits.pids:
        _write(dirs["pids"] / "pids.max", str(limits.pids))
    if limits.cpu_weight and "cpu" in dirs:  # cpu.shares: 1024 is v2's weight 100
        _write_if_there(dirs["cpu"] / "cpu.shares", str(max(2, limits.cpu_weight * 1024 // 100)))
    if limits.cpu_max and "cpu" in dirs:
        _write_if_there(dirs["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        _write_if_there(dirs["cpu"] / "cpu.cfs_quota_us", str(_quota_us(limits.cpu_max)))
    if limits.io_weight and "blkio" in dirs:
        _write_if_there(dirs["blkio"] / "blkio.weight", str(min(1000, max(10, limits.io_weight))))


def _quota_us(cpus: float) -> int:
    """CPUs as microseconds of CPU time per period (at least the kernel's minimum, 1 ms)."""
    return max(1000, round(cpus * CPU_PERIOD_US))


def enable_v2_subtree(scope: Path) -> None:
    """Make `scope` and the folders between it and the v2 parent, each passing memory and pids
    (and cpu, io where offered) down to its children."""
    parent = scope.parent.parent  # <parent>/botfleet/<scope>
    for here in (parent, scope.parent, scope):
        here.mkdir(exist_ok=True)
        wanted = {"memory", "pids", "cpu", "io"} & _controllers(here, "cgroup.controllers")
        missing = wanted - _controllers(here, "cgroup.subtree_control")
        if missing:
            _write(here / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(missing)))


def _v2_tree(parent: Path | None, scope: str) -> CgroupTree | str:
    if parent is None:
        if not (V2_MOUNT / "cgroup.controllers").exists():
            return "no cgroup v2 hierarchy at /sys/fs/cgroup"
        own = own_cgroup("")
        if own is None:
            return "the manager's cgroup v2 is unknown"
        parent = V2_MOUNT / own.lstrip("/")
    offered = _controllers(parent, "cgroup.controllers")
    if not {"memory", "pids"} <= offered:
        return f"{parent} does not offer the memory and pids controllers ({sorted(offered)})"
    try:
        _delegate_v2(parent)
    except OSError as exc:
        return f"cannot delegate memory and pids under {parent}: {exc}"
    return CgroupTree(2, {_UNIFIED: parent / "botfleet" / scope})


def _delegate_v2(parent: Path) -> None:
    """Let `parent` pass memory and pids down. A cgroup with processes cannot (v2's no
    internal processes rule): the manager then moves itself into a leaf of its own,
    `<parent>/botfleet-manager`, as systemd's delegation guide does."""
    if {"memory", "pids"} <= _controllers(parent, "cgroup.subtree_control"):
        return
    try:
        _write(parent / "cgroup.subtree_control", "+memory +pids")
    except OSError as exc:
        if (
            exc.errno != errno.EBUSY
            or str(os.getpid()) not in (parent / "cgroup.procs").read_text().split()
        ):
            raise
        leaf = parent / "botfleet-manager"
        leaf.mkdir(exist_ok=True)
        _write(leaf / "cgroup.procs", str(os.getpid()))
        _write(parent / "cgroup.subtree_control", "+memory +pids")


def _v1_mounts() -> dict[str, Path]:
    """Each v1 controller's mount point (co-mounted ones, like cpu,cpuacct, share one)."""
    mounts: dict[str, Path] = {}
    with suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[2] == "cgroup":
                for option in fields[3].split(","):
                    mounts.setdefault(option, Path(fields[1]))
    return mounts


def _v1_tree(scope: str) -> CgroupTree | str:
    mounts = _v1_mounts()
    scopes: dict[str, Path] = {}
    for hierarchy in (*V1_REQUIRED, *V1_OPTIONAL):
        mount, own = mounts.get(hierarchy), own_cgroup(hierarchy)
        if mount is None or own is None:
            if hierarchy in V1_REQUIRED:
                return f"no cgroup v1 {hierarchy} hierarchy is mounted"
            continue
        base = mount / own.lstrip("/")
        if not os.access(base, os.W_OK):
            if hierarchy in V1_REQUIRED:
                return f"{base} is not writable by the manager"
            continue
        scopes[hierarchy] = base / "botfleet" / scope  # made by the first launch
    return CgroupTree(1, scopes)


def detect(parent: Path | None, data_dir: Path) -> CgroupTree | str:
    """Where bots' cgroups can be made (v2 first, then v1), or why they cannot."""
    scope = scope_name(data_dir)
    v2 = _v2_tree(parent, scope)
    if isinstance(v2, CgroupTree) or parent is not None:
        return v2
    v1 = _v1_tree(scope)
    return v1 if isinstance(v1, CgroupTree) else f"{v2}; {v1}"

"""The `process` backend: each bot runs as a local child process (the embedded default).

Bots live in their own session, so Ctrl-C or a restart of the manager does not kill them, and a
stop can signal the whole process group. Each workload has a small JSON record under
`<data_dir>/workloads/` so that a new manager process finds its bots again; the record identifies
the process by pid AND start time (field 22 of /proc/<pid>/stat), which guards against pid reuse.
The record never holds the environment, and the environment never holds a secret: the token and
secrets reach the runtime through an inherited pipe (`botfleet.runtime.env.SECRET_ENV_FD`).

When the manager is root, each bot runs under an unprivileged uid of its own, in its own working
directory, with resource limits (`bot_uids`; see orchestrators/process_isolation.py). Without
that, bots share the manager's user: the backend is then for development and trusted bots only.
Stop and remove kill the bot's children too, also after the bot itself exited.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from contextlib import suppress
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from botfleet.orchestrators import process_isolation as isolation
from botfleet.orchestrators.base import (
    BackendUnavailable,
    LaunchFailed,
    LaunchSpec,
    LogFollower,
    Orchestrator,
    OrchestratorError,
    StateRef,
    Workload,
    WorkloadState,
    WorkloadStatus,
)
from botfleet.orchestrators.config import BackendConfig
from botfleet.orchestrators.log_tail import LogLimits, read_tail
from botfleet.orchestrators.stopping import Engine, poll_until_gone, stop_workload
from botfleet.runtime.env import SECRET_ENV_FD

log = logging.getLogger(__name__)

#: The only manager variables a bot inherits: enough for the interpreter to work, no secrets.
INHERITED_ENV = ("PATH", "PYTHONPATH", "HOME", "LANG")
_REF = re.compile(r"^(\d+)-(\d+)$")
_POLL_S = 0.05
_BLOCK = 8192
_COPY_BLOCK = 1 << 20
_FOLLOW_CHUNK = 256 * 1024
#: How often a launch reaps the exited children of this manager (zombies); the reconciler's
#: listings reap them too.
_REAP_EVERY_S = 1.0


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


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of a process, or None when /proc has no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # comm may contain spaces and parentheses
    return fields[0], int(fields[19])  # fields[0] is field 3 (state), fields[19] field 22


def _exited(returncode: int) -> WorkloadStatus:
    """Map a Popen return code; a signal death becomes 128+N, as shells and Docker report it."""
    if returncode >= 0:
        return WorkloadStatus(WorkloadState.EXITED, returncode, f"exited with code {returncode}")
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return WorkloadStatus(WorkloadState.EXITED, 128 - returncode, f"killed by {name}")


def _kill_group(pgid: int, starttime: int, sig: signal.Signals) -> None:
    try:
        isolation.kill_group(pgid, starttime, sig)
    except PermissionError as exc:
        raise OrchestratorError(f"not allowed to signal process group {pgid}: {exc}") from exc


def _sweep(record: Mapping[str, Any], claims: isolation.UidClaims | None = None) -> None:
    """Kill what a bot left behind: its process group and, with its own uid, every process of
    that uid (setsid escapes a group, never a uid). A uid whose processes survive stays busy."""
    _kill_group(record["pid"], record["starttime"], signal.SIGKILL)
    uid = record.get("uid")
    if uid is not None and not isolation.kill_uid(uid):
        log.warning("processes of bot uid %s survived SIGKILL", uid)
        if claims is not None:
            claims.taint(uid)


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _copytruncate(path: Path, keep_bytes: int, files: int) -> None:
    """Shift `path.1`… up by one (the oldest falls off), copy the last `keep_bytes` of `path`
    (from a line start when there is one) into `path.1` (0600), then truncate `path`."""
    if files > 1:
        oldest = path.with_name(f"{path.name}.{files - 1}")
        oldest.unlink(missing_ok=True)
        for n in range(files - 2, 0, -1):
            older = path.with_name(f"{path.name}.{n}")
            if older.exists():
                os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
        tmp = path.with_name(f"{path.name}.rotating")
        with path.open("rb") as src:
            size = src.seek(0, os.SEEK_END)
            start = max(0, size - keep_bytes)
            if start:
                src.seek(start)
                head = src.read(min(_BLOCK, size - start))
                newline = head.find(b"\n")
                start += newline + 1 if 0 <= newline < len(head) - 1 else 0
            src.seek(start)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as dst:
                remaining = size - start
                while remaining > 0 and (block := src.read(min(_COPY_BLOCK, remaining))):
                    dst.write(block)
                    remaining -= len(block)
        os.replace(tmp, path.with_name(f"{path.name}.1"))
    os.truncate(path, 0)


class _FileFollower(LogFollower):
    """Follows `<bot>.log`: the tail first, then what is appended; a file shorter than what was
    read was rotated (copytruncate), so reading starts again at its beginning."""

    def __init__(self, paths: list[Path], *, tail: int, limits: LogLimits) -> None:
        self._path = paths[0]
        try:
            self._offset = self._path.stat().st_size
        except FileNotFoundError:
            self._offset = 0
        text = read_tail(paths, tail=tail, limits=limits) if tail > 0 else ""
        self._first: bytes | None = (text + "\n").encode() if text else b""

    def read(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            if first:
                return first
        try:
            with self._path.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size < self._offset:
                    self._offset = 0
                if size == self._offset:
                    return b""
                handle.seek(self._offset)
                data = handle.read(min(size - self._offset, _FOLLOW_CHUNK))
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise BackendUnavailable(f"cannot read {self._path.name}: {exc}") from exc
        self._offset += len(data)
        return data


class ProcessOrchestrator(Orchestrator):
    """Runs bots as local processes; see the module docstring."""

    name: ClassVar[str] = "process"
    config_class: ClassVar[type[ProcessOrchestratorConfig]] = ProcessOrchestratorConfig

    def __init__(self, config: ProcessOrchestratorConfig) -> None:
        self.config = config
        self._records_dir = config.data_dir / "workloads"
        self._logs_dir = config.data_dir / "logs"
        # Popen objects of the processes THIS instance launched: only they give exit codes.
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()  # protects _locks; never held while waiting
        self._state_lock = threading.Lock()  # a state directory changes hands one launch at a time
        self._isolation_lock = threading.Lock()
        self._isolation: tuple[bool, str] | None = None  # (bot uids on, why not), probed once
        self._claims: isolation.UidClaims | None = None  # made with the isolation decision
        self._reaped_at = 0.0

    # -- bookkeeping --------------------------------------------------------------------------

    def _lock_for(self, ref: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(ref, threading.Lock())

    def _record_path(self, ref: str) -> Path:
        return self._records_dir / f"{ref}.json"

    def _load(self, ref: str) -> dict[str, Any] | None:
        """The record of `ref`, None if there is none; an unreadable one is not 'not found'."""
        if not _REF.match(ref):
            return None
        try:
            return json.loads(self._record_path(ref).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise BackendUnavailable(f"cannot read the record of workload {ref}: {exc}") from exc

    def _save(self, ref: str, record: dict[str, Any]) -> None:
        """Write atomically (0600) so a crash never leaves half a record."""
        tmp = self._record_path(ref).with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(record, indent=2))
        os.replace(tmp, self._record_path(ref))

    def _log_path(self, bot_id: str) -> Path:
        if not bot_id or bot_id.startswith(".") or Path(bot_id).name != bot_id:
            raise ValueError(f"bot id {bot_id!r} cannot name a log file")
        return self._logs_dir / f"{bot_id}.log"

    def _status(self, ref: str, record: dict[str, Any]) -> WorkloadStatus:
        """Current status of a recorded workload; caller holds the ref's lock."""
        if record.get("exit_code") is not None:
            return WorkloadStatus(WorkloadState.EXITED, record["exit_code"], record["exit_detail"])
        proc = self._children.get(ref)
        if proc is not None:
            returncode = proc.poll()  # also reaps the zombie
            if returncode is None:
                return WorkloadStatus(WorkloadState.RUNNING)
            status = _exited(returncode)
            record.update(exit_code=status.exit_code, exit_detail=status.detail)
            try:
                self._save(ref, record)
            except OSError as exc:  # keep the Popen: the code is still known next time
                log.warning("cannot record the exit of workload %s: %s", ref, exc)
            else:
                self._children.pop(ref, None)
            return status
        stat = _proc_stat(record["pid"])
        if stat is not None and stat[1] == record["starttime"] and stat[0] not in "ZX":
            return WorkloadStatus(WorkloadState.RUNNING)
        return WorkloadStatus(
            WorkloadState.EXITED,
            None,
            "the process is gone; its exit code is unknown (another manager process started it)",
        )

    def _wait_gone(self, ref: str, timeout: float) -> WorkloadStatus:
        """Our own child is waited for (it gives the exit code); another's is polled in /proc."""
        proc = self._children.get(ref)
        if proc is not None:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
            return self.inspect(ref)
        return poll_until_gone(partial(self.inspect, ref), timeout, poll_s=_POLL_S)

    # -- isolation ----------------------------------------------------------------------------

    def _limits(self, *, own_uid: bool) -> dict[int, int]:
        """RLIMIT_NPROC counts every process of a uid: only a bot's own uid makes it per bot."""
        wanted = {
            resource.RLIMIT_AS: self.config.rlimit_as_mb * 1024 * 1024,
            resource.RLIMIT_NOFILE: self.config.rlimit_nofile,
        }
        if own_uid:
            wanted[resource.RLIMIT_NPROC] = self.config.rlimit_nproc
        return isolation.clamp_limits(wanted)

    def _uses_bot_uids(self) -> bool:
        """Whether bots run under their own uids; decided (and probed) once per instance."""
        with self._isolation_lock:
            if self._isolation is None:
                self._isolation = self._decide_isolation()
                self._claims = isolation.UidClaims(
                    self._work_root(True),
                    self.config.uid_base,
                    self.config.uid_count,
                    self.config.bot_gid,
                )
            enabled, why_not = self._isolation
        if not enabled and self.config.bot_uids == "on":
            raise LaunchFailed(
                f"bots cannot run under their own uids (BOTFLEET_PROCESS_BOT_UIDS=on): {why_not}",
                code="isolation_unavailable",
            )
        return enabled

    def _decide_isolation(self) -> tuple[bool, str]:
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
        prefix = isolation.prlimit_prefix(self._limits(own_uid=True)) or []
        probe_uid = self.config.uid_base + self.config.uid_count - 1
        why_not = isolation.probe_as_uid(
            [*prefix, self.config.command[0], "-c", "import botfleet.runtime"],
            uid=probe_uid,
            gid=self.config.bot_gid,
            env=self._inherited_env(),
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
                "process backend: bots CANNOT run under their own uids, so they run as root and "
                "can read every other bot and the manager's secrets. The probe failed: %s. Fix: "
                "let gid %d traverse every directory above the interpreter and the installed "
                "botfleet (e.g. `setfacl -m g:%d:x <dir>`, see README), or set "
                "BOTFLEET_PROCESS_BOT_UIDS=off to run trusted bots only and silence this.",
                why_not,
                self.config.bot_gid,
                self.config.bot_gid,
            )
        return False, why_not

    def _work_root(self, own_uid: bool) -> Path:
        if self.config.work_root is not None:
            return self.config.work_root
        return isolation.DEFAULT_ISOLATED_WORK_ROOT if own_uid else self.config.data_dir / "bots"

    def _state_root(self, own_uid: bool) -> Path:
        if self.config.state_root is not None:
            return self.config.state_root
        return isolation.DEFAULT_STATE_ROOT if own_uid else self.config.data_dir / "state"

    def state_dir(self, state: StateRef) -> str:
        return str(self._state_root(self._uses_bot_uids()) / state.slug)

    def _prepare_state(self, state: StateRef, uid: int | None) -> Path:
        """The state directory, made if new, 0700 and (with bot uids) the attempt's alone."""
        root = self._state_root(uid is not None)
        if uid is not None:
            isolation.ensure_traversable_root(root)  # 0711: entered, never listed, by bots
        else:
            _private_dir(root)
        path = root / state.slug
        with self._state_lock:
            with suppress(FileExistsError):
                path.mkdir(mode=0o700)
            if not path.is_dir() or path.is_symlink():
                raise OSError(f"{path} is not a directory")
            if uid is not None:
                isolation.hand_over_tree(path, uid, self.config.bot_gid)
            path.chmod(0o700)
        return path

    def _take_back_state(self, record: Mapping[str, Any]) -> None:
        """An ended attempt's state directory goes back to root before its uid is free again,
        unless a later attempt already holds it."""
        path, uid = record.get("state_dir"), record.get("uid")
        if not path or uid is None:
            return
        with self._state_lock, suppress(FileNotFoundError):
            if Path(path).stat().st_uid == uid:
                isolation.hand_over_tree(Path(path), os.geteuid(), os.getegid())

    def purge_state(self, state: StateRef) -> None:
        for own_uid in (True, False):
            path = self._state_root(own_uid) / state.slug
            with self._state_lock:
                isolation.remove_dir(path)

    def _workdir(self, bot_id: str, own_uid: bool) -> tuple[int | None, Path]:
        """The bot's own working directory, and its uid when it gets one."""
        root = self._work_root(own_uid)
        if own_uid:
            assert self._claims is not None  # made by _uses_bot_uids
            return self._claims.claim()
        _private_dir(root)
        return None, Path(tempfile.mkdtemp(prefix=f"{bot_id}-", dir=root))

    @staticmethod
    def _inherited_env() -> dict[str, str]:
        return {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}

    # -- the contract -------------------------------------------------------------------------

    def _reap(self) -> None:
        """Record the exits of this manager's finished children so zombies do not pile up; at
        most every `_REAP_EVERY_S` (a burst of launches must not poll every child each time),
        and only the exited ones go through `inspect`."""
        now = time.monotonic()
        if now - self._reaped_at < _REAP_EVERY_S:
            return
        self._reaped_at = now
        for ref, proc in list(self._children.items()):
            if proc.poll() is not None:
                self.inspect(ref)

    def launch(self, spec: LaunchSpec) -> str:
        self._reap()
        log_path = self._log_path(spec.bot_id)
        own_uid = self._uses_bot_uids()
        started = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            _private_dir(self._records_dir)
            _private_dir(self._logs_dir)
            # 0600: the bot writes through the descriptor it inherits, never by opening the file
            log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise BackendUnavailable(f"cannot prepare {self.config.data_dir}: {exc}") from exc
        with os.fdopen(log_fd, "ab") as log_file:
            log_file.write(f"--- attempt {spec.attempt} started at {started} ---\n".encode())
            log_file.flush()
            try:
                uid, workdir = self._workdir(spec.bot_id, own_uid)
            except OSError as exc:
                code = "isolation_unavailable" if own_uid else "launch_failed"
                message = f"cannot make the bot's working directory: {exc}"
                raise LaunchFailed(message, code=code) from exc
            state_dir = None
            try:
                if spec.state is not None:
                    state_dir = self._prepare_state(spec.state, uid)
            except OSError as exc:
                isolation.remove_dir(workdir)
                message = f"cannot prepare the bot's state directory: {exc}"
                raise LaunchFailed(message, code="state_unavailable") from exc
            try:
                proc = self._spawn(spec, log_file, uid, workdir)
            except LaunchFailed as exc:
                log_file.write(f"--- attempt {spec.attempt} failed to start: {exc} ---\n".encode())
                isolation.remove_dir(workdir)
                raise
        stat = _proc_stat(proc.pid)  # readable even if it already exited: it is not reaped yet
        starttime = stat[1] if stat else 0
        ref = f"{proc.pid}-{starttime}"
        record = {
            "runtime_ref": ref,
            "bot_id": spec.bot_id,
            "pid": proc.pid,
            "starttime": starttime,
            "uid": uid,
            "workdir": str(workdir),
            "state_dir": str(state_dir) if state_dir is not None else None,
            "labels": spec.workload_labels(),
            "log_path": str(log_path),
            "launched_at": started,
            "exit_code": None,
            "exit_detail": "",
        }
        try:
            if stat is None:
                raise OSError(f"/proc/{proc.pid}/stat is not readable")
            self._save(ref, record)
        except OSError as exc:  # an unrecorded bot would be an orphan nobody can find: kill it
            _kill_group(proc.pid, starttime, signal.SIGKILL)
            proc.wait()
            _sweep(record, self._claims)
            isolation.remove_dir(workdir)
            raise BackendUnavailable(f"cannot record workload of bot {spec.bot_id}: {exc}") from exc
        self._children[ref] = proc
        return ref

    def _spawn(
        self, spec: LaunchSpec, log_file: Any, uid: int | None, workdir: Path
    ) -> subprocess.Popen[bytes]:
        """Start the bot: its own session, uid and directory, limits, secrets through a pipe."""
        command = self.config.command
        if shutil.which(command[0]) is None:
            raise LaunchFailed(
                f"cannot start the bot process {command[0]!r}: No such file or executable"
            )
        limits = self._limits(own_uid=uid is not None)
        prefix = isolation.prlimit_prefix(limits)
        read_fd, write_fd = os.pipe()
        env = self._inherited_env() | dict(spec.env)
        env |= {"HOME": str(workdir), SECRET_ENV_FD: str(read_fd)}
        # The uid switch: by `setpriv` in the child when there is one, else by Popen itself.
        # Popen's own switch makes CPython fork() the whole manager (page tables of its every
        # mapping, with the GIL held: ~10 ms a launch); without it, vfork() costs a fraction.
        switch = isolation.setpriv_prefix(uid, self.config.bot_gid) if uid is not None else []
        identity: dict[str, Any] = {}
        if uid is not None and switch is None:
            identity = {"user": uid, "group": self.config.bot_gid, "extra_groups": []}
        try:
            proc = subprocess.Popen(
                [*(switch or []), *(prefix or []), *command],
                env=env,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                pass_fds=(read_fd,),
                umask=0o077,
                start_new_session=True,  # survive the manager's Ctrl-C; signal as a group
                **identity,
            )
        except (OSError, ValueError) as exc:
            os.close(write_fd)
            reason = getattr(exc, "strerror", None) or str(exc)
            raise LaunchFailed(f"cannot start the bot process {command[0]!r}: {reason}") from exc
        finally:
            os.close(read_fd)
        isolation.send_secret_env(write_fd, spec.secret_env, name=spec.bot_id)
        if self.config.nice:  # before the runtime's first thread: everything after inherits it
            isolation.lower_priority(proc.pid, self.config.nice)
        if prefix is None:
            isolation.apply_limits_after_spawn(proc.pid, limits)
        return proc

    def inspect(self, runtime_ref: str) -> WorkloadStatus:
        """Never raises for a missing workload: NOT_FOUND is what the reconciler wants."""
        with self._lock_for(runtime_ref):
            record = self._load(runtime_ref)
            if record is None:
                return WorkloadStatus(WorkloadState.NOT_FOUND, detail="no such workload record")
            return self._status(runtime_ref, record)

    def stop(self, runtime_ref: str, *, grace_s: float) -> WorkloadStatus:
        """The shared ladder on the process group; then whatever the bot left is killed (its
        group and its uid's processes), also when the bot itself had already exited."""
        with self._lock_for(runtime_ref):
            record = self._load(runtime_ref)
        if record is None:
            return WorkloadStatus(WorkloadState.NOT_FOUND, detail="no such workload record")
        # start_new_session: the leader's pid is the group id
        pgid, starttime = record["pid"], record["starttime"]
        engine = Engine(
            inspect=partial(self.inspect, runtime_ref),
            terminate=partial(_kill_group, pgid, starttime, signal.SIGTERM),
            kill=partial(_sweep, record, self._claims),
            wait_gone=partial(self._wait_gone, runtime_ref),
        )
        status = stop_workload(
            engine, grace_s=grace_s, kill_wait_s=self.config.kill_wait_s, kill_leftovers=True
        )
        if status.is_gone:
            _sweep(record, self._claims)
        return status

    def list_workloads(self, labels: Mapping[str, str] | None = None) -> list[Workload]:
        wanted = dict(labels or {})
        try:
            paths = sorted(self._records_dir.glob("*.json"))
        except OSError as exc:
            raise BackendUnavailable(f"cannot list {self._records_dir}: {exc}") from exc
        workloads = []
        for path in paths:
            ref = path.stem
            with self._lock_for(ref):
                record = self._load(ref)
                if record is None:  # removed meanwhile
                    continue
                if any(record["labels"].get(k) != v for k, v in wanted.items()):
                    continue
                status = self._status(ref, record)
            workloads.append(Workload(ref, record["bot_id"], record["labels"], status))
        return workloads

    def remove(self, runtime_ref: str) -> None:
        """Forget an ended workload; refuses while it runs, since it could not be found again."""
        with self._lock_for(runtime_ref):
            record = self._load(runtime_ref)
            if record is None:
                return
            if not self._status(runtime_ref, record).is_gone:
                raise OrchestratorError(f"workload {runtime_ref} is still running; stop it first")
            # children it left; its uid is free again only once they are gone
            _sweep(record, self._claims)
            if record.get("workdir"):
                try:
                    self._take_back_state(record)
                    isolation.remove_dir(Path(record["workdir"]))
                except OSError as exc:
                    raise BackendUnavailable(
                        f"cannot remove the working directory of {runtime_ref}: {exc}"
                    ) from exc
            self._record_path(runtime_ref).unlink(missing_ok=True)
            self._children.pop(runtime_ref, None)
        with self._guard:
            self._locks.pop(runtime_ref, None)

    @property
    def supports_logs(self) -> bool:
        return True

    def _log_paths(self, bot_id: str) -> list[Path]:
        """The bot's log files, newest first: `<bot>.log`, `<bot>.log.1`, …"""
        current = self._log_path(bot_id)
        rotated = [
            current.with_name(f"{current.name}.{n}") for n in range(1, self.config.log_files)
        ]
        return [current, *rotated]

    def logs(self, runtime_ref: str, *, bot_id: str, tail: int) -> str:
        """The last `tail` lines of the bot's logs (all attempts, rotated files too), read from
        the end in blocks: at most the byte cap and one block, whatever the files hold."""
        try:
            return read_tail(self._log_paths(bot_id), tail=tail, limits=self.config.log_limits())
        except OSError as exc:
            raise BackendUnavailable(f"cannot read the log of bot {bot_id}: {exc}") from exc

    def follow_logs(self, runtime_ref: str, *, bot_id: str, tail: int) -> LogFollower:
        return _FileFollower(self._log_paths(bot_id), tail=tail, limits=self.config.log_limits())

    def rotate_logs(self) -> None:
        """copytruncate, as logrotate does: a bot writes its log through an inherited O_APPEND
        descriptor (so it survives manager restarts), which no rename would follow. A file over
        the size cap is copied (its last `log_file_max_bytes`) to `.1` after shifting the older
        ones, then truncated: the bot's next write lands at the new end. Output written between
        the copy and the truncation (microseconds) is lost."""
        try:
            paths = sorted(self._logs_dir.glob("*.log"))
        except OSError as exc:
            raise BackendUnavailable(f"cannot list {self._logs_dir}: {exc}") from exc
        for path in paths:
            try:
                if path.stat().st_size > self.config.log_file_max_bytes:
                    _copytruncate(path, self.config.log_file_max_bytes, self.config.log_files)
            except FileNotFoundError:
                continue

    def delete_logs(self, bot_id: str) -> None:
        """Remove `<bot>.log` and its rotated files."""
        current = self._log_path(bot_id)
        for path in [current, *self._logs_dir.glob(f"{current.name}.*")]:
            if path.name == current.name or path.name.removeprefix(current.name + ".").isdigit():
                path.unlink(missing_ok=True)

    def check_health(self) -> None:
        """Ready when the data directory is writable (records and logs go there)."""
        probe = self.config.data_dir / f".health-{os.getpid()}"
        try:
            _private_dir(self._records_dir)
            _private_dir(self._logs_dir)
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise BackendUnavailable(
                f"data dir {self.config.data_dir} is not writable: {exc}"
            ) from exc

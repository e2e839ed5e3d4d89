"""The `process` backend: each bot runs as a local child process (the embedded default).

Bots live in their own session, so Ctrl-C or a restart of the manager does not kill them, and a
stop can signal the whole process group. Each workload has a small JSON record under
`<data_dir>/workloads/` so that a new manager process finds its bots again; the record identifies
the process by pid AND start time (field 22 of /proc/<pid>/stat), which guards against pid reuse.
The record never holds the environment: it carries the bot's token and secrets.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from contextlib import suppress
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from orchestrators.base import (
    BackendUnavailable,
    LaunchFailed,
    LaunchSpec,
    Orchestrator,
    OrchestratorError,
    Workload,
    WorkloadState,
    WorkloadStatus,
)
from orchestrators.config import BackendConfig
from orchestrators.stopping import Engine, poll_until_gone, stop_workload

log = logging.getLogger(__name__)

#: The only manager variables a bot inherits: enough for the interpreter to work, no secrets.
INHERITED_ENV = ("PATH", "PYTHONPATH", "HOME", "LANG")
_REF = re.compile(r"^(\d+)-(\d+)$")
_POLL_S = 0.05
_BLOCK = 8192


class ProcessOrchestratorConfig(BackendConfig):
    """Settings of the process backend (environment: `BOTFLEET_PROCESS_*`)."""

    model_config = SettingsConfigDict(env_prefix="BOTFLEET_PROCESS_", extra="ignore")

    data_dir: Path = Field(
        description="Directory holding workload records (workloads/) and bot logs (logs/)."
    )
    command: list[str] = Field(
        default_factory=lambda: [sys.executable, "-m", "bot_runtime"],
        min_length=1,
        description="Command that starts one bot; it gets the bot's environment and no arguments.",
    )


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


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise OrchestratorError(f"not allowed to signal process group {pgid}: {exc}") from exc


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
        """Write atomically so a crash never leaves half a record."""
        tmp = self._record_path(ref).with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2))
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

    # -- the contract -------------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> str:
        for ref in list(self._children):  # reap finished children so zombies do not pile up
            self.inspect(ref)
        log_path = self._log_path(spec.bot_id)
        env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ} | spec.environment()
        started = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            self._records_dir.mkdir(parents=True, exist_ok=True)
            self._logs_dir.mkdir(parents=True, exist_ok=True)
            log_file = log_path.open("ab")
        except OSError as exc:
            raise BackendUnavailable(f"cannot prepare {self.config.data_dir}: {exc}") from exc
        with log_file:
            log_file.write(f"--- attempt {spec.attempt} started at {started} ---\n".encode())
            log_file.flush()
            try:
                proc = subprocess.Popen(
                    self.config.command,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # survive the manager's Ctrl-C; signal as a group
                )
            except (OSError, ValueError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                log_file.write(
                    f"--- attempt {spec.attempt} failed to start: {reason} ---\n".encode()
                )
                raise LaunchFailed(
                    f"cannot start the bot process {self.config.command[0]!r}: {reason}"
                ) from exc
        stat = _proc_stat(proc.pid)  # readable even if it already exited: it is not reaped yet
        starttime = stat[1] if stat else 0
        ref = f"{proc.pid}-{starttime}"
        record = {
            "runtime_ref": ref,
            "bot_id": spec.bot_id,
            "pid": proc.pid,
            "starttime": starttime,
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
            _kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
            raise BackendUnavailable(f"cannot record workload of bot {spec.bot_id}: {exc}") from exc
        self._children[ref] = proc
        return ref

    def inspect(self, runtime_ref: str) -> WorkloadStatus:
        """Never raises for a missing workload: NOT_FOUND is what the reconciler wants."""
        with self._lock_for(runtime_ref):
            record = self._load(runtime_ref)
            if record is None:
                return WorkloadStatus(WorkloadState.NOT_FOUND, detail="no such workload record")
            return self._status(runtime_ref, record)

    def stop(self, runtime_ref: str, *, grace_s: float) -> WorkloadStatus:
        """The shared ladder on the process group; SIGKILL also sweeps what the leader left."""

        def signal_group(sig: signal.Signals) -> None:
            # start_new_session: the leader's pid is the group id (read once the ref is known)
            _kill_group(int(runtime_ref.split("-")[0]), sig)

        engine = Engine(
            inspect=partial(self.inspect, runtime_ref),
            terminate=partial(signal_group, signal.SIGTERM),
            kill=partial(signal_group, signal.SIGKILL),
            wait_gone=partial(self._wait_gone, runtime_ref),
        )
        return stop_workload(
            engine, grace_s=grace_s, kill_wait_s=self.config.kill_wait_s, kill_leftovers=True
        )

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
            self._record_path(runtime_ref).unlink(missing_ok=True)
            self._children.pop(runtime_ref, None)
        with self._guard:
            self._locks.pop(runtime_ref, None)

    @property
    def supports_logs(self) -> bool:
        return True

    def logs(self, runtime_ref: str, *, bot_id: str, tail: int) -> str:
        """The last `tail` lines of the bot's log (all attempts), read from the end in blocks."""
        if tail <= 0:
            return ""
        try:
            f = self._log_path(bot_id).open("rb")
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise BackendUnavailable(f"cannot read the log of bot {bot_id}: {exc}") from exc
        with f:
            pos = f.seek(0, os.SEEK_END)
            data = b""
            while pos > 0 and data.count(b"\n") <= tail:
                step = min(_BLOCK, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
        lines = data.decode(errors="replace").split("\n")
        if lines[-1] == "":
            lines.pop()
        return "\n".join(lines[-tail:])

    def check_health(self) -> None:
        """Ready when the data directory is writable (records and logs go there)."""
        probe = self.config.data_dir / f".health-{os.getpid()}"
        try:
            self._records_dir.mkdir(parents=True, exist_ok=True)
            self._logs_dir.mkdir(parents=True, exist_ok=True)
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise BackendUnavailable(
                f"data dir {self.config.data_dir} is not writable: {exc}"
            ) from exc

"""`ProcessOrchestrator`: the contract, over the process package's parts (see its docstring)."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

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
from botfleet.orchestrators.process import containment
from botfleet.orchestrators.process.config import ProcessOrchestratorConfig
from botfleet.orchestrators.process.kind_envs import KindEnvs
from botfleet.orchestrators.process.logs import BotLogs
from botfleet.orchestrators.process.records import Record, WorkloadRecords, proc_stat
from botfleet.orchestrators.process.spawn import spawn
from botfleet.orchestrators.process.state import StateFolders
from botfleet.orchestrators.process.status import Children
from botfleet.orchestrators.process.uids import BotUids, kill_group
from botfleet.orchestrators.stopping import Engine, stop_workload

_NO_RECORD = WorkloadStatus(WorkloadState.NOT_FOUND, detail="no such workload record")


class ProcessOrchestrator(Orchestrator):
    """Runs bots as local processes; see the package docstring."""

    name: ClassVar[str] = "process"
    config_class: ClassVar[type[ProcessOrchestratorConfig]] = ProcessOrchestratorConfig
    builds_kind_envs: ClassVar[bool] = True

    def __init__(self, config: ProcessOrchestratorConfig) -> None:
        self.config = config
        self._records = WorkloadRecords(config.data_dir / "workloads")
        self._logs = BotLogs(config)
        self._children = Children(self._records)
        self._uids = BotUids(config)
        self._state = StateFolders(config)
        self._cgroups = containment.BotCgroups(config)
        #: The virtualenvs of kinds with a `package` (their bots' `LaunchSpec.python`).
        self.kind_envs = KindEnvs.from_config(config)

    # -- kinds' virtualenvs (kind_envs.py) ----------------------------------------------------

    def kind_python(self, name: str, version: int, package: Mapping[str, Any]) -> str | None:
        python = self.kind_envs.ready(name, version, package)
        return None if python is None else str(python)

    def build_kind_env(self, name: str, version: int, package: Mapping[str, Any]) -> str:
        return str(self.kind_envs.ensure(name, version, dict(package)))

    # -- launch -------------------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> str:
        self._children.reap(inspect=self.inspect)
        log_path = self._logs.path(spec.bot_id)
        own_uid = self._uids.enabled()
        started = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            self._records.ensure_dir()
            self._logs.ensure_dir()
            # a pipe the manager reads into the log, within its cap (process/log_pipes.py)
            log_file = self._logs.open_stream(spec.bot_id)
        except OSError as exc:
            raise BackendUnavailable(f"cannot prepare {self.config.data_dir}: {exc}") from exc
        with log_file:
            log_file.write(f"--- attempt {spec.attempt} started at {started} ---\n".encode())
            log_file.flush()
            try:
                uid, workdir = self._uids.workdir(spec.bot_id, own_uid)
            except OSError as exc:
                code = "isolation_unavailable" if own_uid else "launch_failed"
                message = f"cannot make the bot's working directory: {exc}"
                raise LaunchFailed(message, code=code) from exc
            state_dir = None
            try:
                if spec.state is not None:
                    state_dir = self._state.prepare(spec.state, uid)
            except OSError as exc:
                isolation.remove_dir(workdir)
                message = f"cannot prepare the bot's state directory: {exc}"
                raise LaunchFailed(message, code="state_unavailable") from exc
            memory_mb = spec.resources.memory_mb if spec.resources else None
            limits = self._uids.limits(own_uid=uid is not None, memory_mb=memory_mb)
            cgroup = None
            try:
                cgroup = self._cgroups.create(spec)
                proc = spawn(
                    self.config, spec, log_file=log_file, uid=uid, workdir=workdir,
                    limits=limits, cgroup=cgroup,
                )  # fmt: skip
            except LaunchFailed as exc:
                log_file.write(f"--- attempt {spec.attempt} failed to start: {exc} ---\n".encode())
                isolation.remove_dir(workdir)
                if cgroup is not None:
                    cgroup.remove()
                raise
        stat = proc_stat(proc.pid)  # readable even if it already exited: it is not reaped yet
        starttime = stat[1] if stat else 0
        ref = f"{proc.pid}-{starttime}"
        record: Record = {
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
            "ended": False,  # once none of its processes remain (process/status.py)
            "cgroup": cgroup.to_record() if cgroup is not None else None,
            "memory_mib": self.config.rlimit_as_mb if cgroup is not None else None,
        }
        try:
            if stat is None:
                raise OSError(f"/proc/{proc.pid}/stat is not readable")
            self._records.save(ref, record)
        except OSError as exc:  # an unrecorded bot would be an orphan nobody can find: kill it
            kill_group(proc.pid, starttime, signal.SIGKILL)
            proc.wait()
            containment.remove(record)
            self._uids.sweep(record)
            isolation.remove_dir(workdir)
            raise BackendUnavailable(f"cannot record workload of bot {spec.bot_id}: {exc}") from exc
        self._children.add(ref, proc)
        return ref

    # -- watch and stop -----------------------------------------------------------------------

    def inspect(self, runtime_ref: str) -> WorkloadStatus:
        """Never raises for a missing workload: NOT_FOUND is what the reconciler wants."""
        with self._records.lock_for(runtime_ref):
            record = self._records.load(runtime_ref)
            if record is None:
                return _NO_RECORD
            status = self._children.status(runtime_ref, record)
        if status.is_gone:  # its last lines are in the log before its end is reported
            self._logs.drain(record["bot_id"])
        return status

    def stop(self, runtime_ref: str, *, grace_s: float) -> WorkloadStatus:
        """The shared ladder on the process group; then whatever the bot left is killed (its
        group and its uid's processes), also when the bot itself had already exited."""
        with self._records.lock_for(runtime_ref):
            record = self._records.load(runtime_ref)
        if record is None:
            return _NO_RECORD
        # start_new_session: the leader's pid is the group id
        pgid, starttime = record["pid"], record["starttime"]
        engine = Engine(
            inspect=partial(self.inspect, runtime_ref),
            terminate=partial(kill_group, pgid, starttime, signal.SIGTERM),
            kill=partial(self._kill_all, record),
            wait_gone=partial(self._children.wait_gone, runtime_ref, inspect=self.inspect),
        )
        status = stop_workload(
            engine, grace_s=grace_s, kill_wait_s=self.config.kill_wait_s, kill_leftovers=True
        )
        if status.is_gone:
            self._kill_all(record)
        return status

    def _kill_all(self, record: Record) -> None:
        """Every process of the workload: its cgroup's, then its group's and its uid's."""
        containment.kill_all(record)
        self._uids.sweep(record)

    def list_workloads(self, labels: Mapping[str, str] | None = None) -> list[Workload]:
        wanted = dict(labels or {})
        workloads = []
        for ref in self._records.refs():
            with self._records.lock_for(ref):
                record = self._records.load(ref)
                if record is None:  # removed meanwhile
                    continue
                if any(record["labels"].get(k) != v for k, v in wanted.items()):
                    continue
                status = self._children.status(ref, record)
            if status.is_gone:
                self._logs.drain(record["bot_id"])
            workloads.append(Workload(ref, record["bot_id"], record["labels"], status))
        return workloads

    def remove(self, runtime_ref: str) -> None:
        """Forget an ended workload; refuses while it runs, since it could not be found again."""
        with self._records.lock_for(runtime_ref):
            record = self._records.load(runtime_ref)
            if record is None:
                return
            if not self._children.status(runtime_ref, record).is_gone:
                raise OrchestratorError(f"workload {runtime_ref} is still running; stop it first")
            # children, files and IPC objects it left; its uid is free only once they are gone
            containment.kill_all(record)
            self._uids.release(record)
            try:  # its end (oom_kill count included) was recorded by the status above
                containment.remove(record)
            except OSError as exc:
                raise BackendUnavailable(
                    f"cannot remove the cgroup of {runtime_ref}: {exc}"
                ) from exc
            if record.get("workdir"):
                try:
                    self._state.take_back(record)
                    isolation.remove_dir(Path(record["workdir"]))
                except OSError as exc:
                    raise BackendUnavailable(
                        f"cannot remove the working directory of {runtime_ref}: {exc}"
                    ) from exc
            self._records.delete(runtime_ref)
            self._children.forget(runtime_ref)
        self._records.forget_lock(runtime_ref)

    # -- state, logs, health ------------------------------------------------------------------

    def state_dir(self, state: StateRef) -> str:
        return str(self._state.root(self._uids.enabled()) / state.slug)

    def purge_state(self, state: StateRef) -> None:
        self._state.purge(state)

    @property
    def supports_logs(self) -> bool:
        return True

    def logs(self, runtime_ref: str, *, bot_id: str, tail: int) -> str:
        return self._logs.tail(bot_id, tail)

    def follow_logs(self, runtime_ref: str, *, bot_id: str, tail: int) -> LogFollower:
        return self._logs.follow(bot_id, tail)

    def rotate_logs(self) -> None:
        """The manager rotates the logs it writes as it writes them (process/log_pipes.py);
        this takes over pipes nobody reads and copytruncates older bots' files (logs.py)."""
        self._logs.rotate()

    def delete_logs(self, bot_id: str) -> None:
        self._logs.delete(bot_id)

    def close(self) -> None:
        """Stop reading the bots' output pipes (they keep running; the next manager reads on)."""
        self._logs.close()

    def containment(self) -> dict[str, str]:
        """`resources`: cgroup_v2, cgroup_v1, rlimits or refused (BOTFLEET_PROCESS_CGROUPS=on
        without cgroups); `uids`: own, shared, or refused (root without a way to switch)."""
        try:
            uids = "own" if self._uids.enabled() else "shared"
        except LaunchFailed:
            uids = "refused"
        return {"resources": self._cgroups.mode(), "uids": uids}

    def check_health(self) -> None:
        """Ready when the data directory is writable (records and logs go there) and the
        cgroups asked for can be made (BOTFLEET_PROCESS_CGROUPS=on)."""
        self._cgroups.check()
        probe = self.config.data_dir / f".health-{os.getpid()}"
        try:
            self._records.ensure_dir()
            self._logs.ensure_dir()
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise BackendUnavailable(
                f"data dir {self.config.data_dir} is not writable: {exc}"
            ) from exc

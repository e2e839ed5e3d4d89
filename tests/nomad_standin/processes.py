"""The task's real process: its environment, its start in its own process group, its exit.

A task runs as a local process with the job's Env, the template's variables and the NOMAD_*
variables; its stdout and stderr go to the allocation's log files (see `logs`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from pathlib import Path

from tests.nomad_standin.state import Alloc, Cluster, Job, event, iso_now
from tests.nomad_standin.variables import render_templates

INHERITED_ENV = ("PATH", "PYTHONPATH", "HOME", "LANG")  # the client agent's env a task sees


def run_task(cluster: Cluster, job: Job, alloc: Alloc) -> None:
    """Set the task up, render its templates, start its process, and watch it exit."""
    task = alloc.task
    task_dir = alloc.dir / task["Name"]
    logs_dir = alloc.dir / "alloc" / "logs"
    for sub in (logs_dir, task_dir / "local", task_dir / "secrets", task_dir / "tmp"):
        sub.mkdir(parents=True, exist_ok=True)
    with cluster.lock:
        if alloc.desired_status == "stop" or alloc.terminal or alloc.client_stopped:
            return
        if alloc.partitioned:  # its template cannot be rendered without the servers: it waits
            return
        alloc.events.append(event("Task Setup", Message="Building Task Directory"))
        cluster.touch(alloc)
        try:
            template_env = render_templates(cluster, alloc, task_dir)
        except LookupError as exc:  # Nomad's template runner blocks until the data exists
            alloc.events.append(event("Template", DisplayMessage=f"Missing: {exc}"))
            return
        env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        env |= _nomad_env(cluster, job, alloc, task_dir)
        env |= dict(task.get("Env") or {})
        env |= template_env
        config = task["Config"]
        if task["Driver"] != "docker":
            command = [config["command"], *config.get("args", [])]
        elif config.get("entrypoint"):  # Docker: the entrypoint, then the args as its Cmd
            command = [*config["entrypoint"], *config.get("args", [])]
        else:
            command = list(cluster.image_command)
        name = task["Name"]
        try:
            with (
                (logs_dir / f"{name}.stdout.0").open("ab") as out,
                (logs_dir / f"{name}.stderr.0").open("ab") as err,
            ):
                alloc.proc = subprocess.Popen(
                    command,
                    env=env,
                    cwd=task_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
        except OSError as exc:
            alloc.events.append(
                event(
                    "Driver Failure",
                    FailsTask=True,
                    DriverError=str(exc),
                    DisplayMessage=f"failed to launch command: {exc}",
                )
            )
            alloc.client_status, alloc.task_state, alloc.failed = "failed", "dead", True
            alloc.client_description = "Failed tasks"
            alloc.finished_at = iso_now()
            cluster.touch(alloc)
            return
    if cluster.report_delay_s > 0:  # the client tells the servers a moment later
        timer = threading.Timer(cluster.report_delay_s, _report_started, (cluster, alloc))
        timer.daemon = True
        timer.start()
    else:
        _report_started(cluster, alloc)
    threading.Thread(target=_watch, args=(cluster, alloc), daemon=True).start()


def _report_started(cluster: Cluster, alloc: Alloc) -> None:
    """The client tells the servers the task runs; a cut-off client cannot (the allocation
    stays as the servers last knew it)."""
    with cluster.lock:
        if alloc.partitioned or alloc.terminal:
            return
        alloc.events.append(event("Started", DisplayMessage="Task started by client"))
        alloc.client_status, alloc.task_state = "running", "running"
        alloc.client_description = "Tasks are running"
        alloc.started_at = iso_now()
        cluster.touch(alloc)


def _nomad_env(cluster: Cluster, job: Job, alloc: Alloc, task_dir: Path) -> dict[str, str]:
    """The NOMAD_* variables a Nomad client gives every task."""
    resources = alloc.task.get("Resources") or {}
    env = {
        "NOMAD_ALLOC_ID": alloc.id,
        "NOMAD_ALLOC_NAME": f"{job.id}.{alloc.group}[0]",
        "NOMAD_ALLOC_INDEX": "0",
        "NOMAD_ALLOC_DIR": str(alloc.dir / "alloc"),
        "NOMAD_TASK_DIR": str(task_dir / "local"),
        "NOMAD_SECRETS_DIR": str(task_dir / "secrets"),
        "NOMAD_TASK_NAME": alloc.task["Name"],
        "NOMAD_GROUP_NAME": alloc.group,
        "NOMAD_JOB_ID": job.id,
        "NOMAD_JOB_NAME": job.spec.get("Name", job.id),
        "NOMAD_NAMESPACE": job.namespace,
        "NOMAD_REGION": cluster.region or "global",
        "NOMAD_DC": cluster.datacenter,
        "NOMAD_CPU_LIMIT": str(resources.get("CPU", 100)),
        "NOMAD_MEMORY_LIMIT": str(resources.get("MemoryMB", 300)),
    }
    env |= {f"NOMAD_META_{k}": v for k, v in (job.spec.get("Meta") or {}).items()}
    return env


def _watch(cluster: Cluster, alloc: Alloc) -> None:
    """Wait for the task's exit and record it as Nomad's client does (Terminated, 128+N)."""
    assert alloc.proc is not None
    returncode = alloc.proc.wait()
    with cluster.lock:
        if alloc.kill_timer:
            alloc.kill_timer.cancel()
        if alloc.client_status == "lost" or alloc.partitioned:
            return  # its node is gone or cut off: the servers never hear of the exit
        sig = -returncode if returncode < 0 else 0
        code = 128 + sig if sig else returncode
        alloc.events.append(
            event(
                "Terminated",
                ExitCode=code,
                Signal=sig,
                DisplayMessage=f"Exit Code: {code}" + (f", Signal: {sig}" if sig else ""),
            )
        )
        stopping = alloc.desired_status == "stop"
        if stopping:
            alloc.events.append(event("Killed", DisplayMessage="Task successfully killed"))
        alloc.task_state = "dead"
        alloc.finished_at = iso_now()
        alloc.failed = code != 0 and not stopping
        if stopping or code == 0:
            alloc.client_status, alloc.client_description = (
                "complete",
                "All tasks have completed",
            )
        else:
            alloc.client_status, alloc.client_description = "failed", "Failed tasks"
        cluster.touch(alloc)


def signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the task's process group (its own session), unless it was reaped already."""
    if proc.returncode is not None:  # reaped: its pid may belong to someone else now
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)

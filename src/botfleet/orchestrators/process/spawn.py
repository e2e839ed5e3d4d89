"""Starting one bot process: its cgroup, its own session, uid and directory, limits, secrets
through a pipe.

The prefixes compose, each a list run before the next: enter the cgroup (as root), switch the
uid (`setpriv`), set the rlimits (`prlimit`), then the bot's command. With a cgroup holding the
bot's memory, RLIMIT_AS is left out: the cgroup bounds what all its processes use together, and
an address-space limit would only break threads and allocators that reserve much and use little.
The bot's command is the backend's (`BOTFLEET_PROCESS_COMMAND`), the runtime under its kind's
own virtualenv (`LaunchSpec.python`), or an `exec` kind's argv (`LaunchSpec.command`): all three
get the same prefixes, environment and secret pipe.

The environment a bot gets is its launch spec's plus a few of the manager's variables the
interpreter needs (`INHERITED_ENV`), never a secret: the token and secrets reach the runtime
through an inherited pipe (`botfleet.runtime.env.SECRET_ENV_FD`).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

from botfleet.orchestrators import process_isolation as isolation
from botfleet.orchestrators.base import LaunchFailed, LaunchSpec
from botfleet.orchestrators.process.cgroups import Cgroup, enter_prefix
from botfleet.orchestrators.process.config import ProcessOrchestratorConfig
from botfleet.orchestrators.process.sandbox import private_tmp_prefix
from botfleet.runtime.env import SECRET_ENV_FD

#: The only manager variables a bot inherits: enough for the interpreter to work, no secrets.
INHERITED_ENV = ("PATH", "PYTHONPATH", "HOME", "LANG")


def inherited_env() -> dict[str, str]:
    return {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}


def bot_command(config: ProcessOrchestratorConfig, spec: LaunchSpec) -> list[str]:
    """An `exec` kind's argv; else the runtime under a kind's own interpreter (its virtualenv,
    kind_envs.py); else the backend's command."""
    if spec.command is not None:
        if not spec.command:
            raise LaunchFailed("cannot start the bot process: its kind's command is empty")
        return list(spec.command)
    if spec.python is not None:
        return [spec.python, "-m", "botfleet.runtime"]
    return list(config.command)


def spawn(
    config: ProcessOrchestratorConfig,
    spec: LaunchSpec,
    *,
    log_file: IO[bytes],
    uid: int | None,
    workdir: Path,
    limits: dict[int, int],
    cgroup: Cgroup | None = None,
) -> subprocess.Popen[bytes]:
    """Start the bot with its output appended to `log_file`; LaunchFailed when it cannot be."""
    command = bot_command(config, spec)
    if shutil.which(command[0]) is None:
        raise LaunchFailed(
            f"cannot start the bot process {command[0]!r}: No such file or executable"
        )
    if cgroup is not None and config.rlimit_as_mb:
        limits = {k: v for k, v in limits.items() if k != resource.RLIMIT_AS}
    prefix = isolation.prlimit_prefix(limits)
    read_fd, write_fd = os.pipe()
    inherited = inherited_env()
    if spec.command is not None or spec.python is not None:
        inherited.pop("PYTHONPATH", None)  # the manager's packages are not a kind's business
    env = inherited | dict(spec.env)
    env |= {"HOME": str(workdir), SECRET_ENV_FD: str(read_fd)}
    # The uid switch: by `setpriv` in the child when there is one, else by Popen itself.
    # Popen's own switch makes CPython fork() the whole manager (page tables of its every
    # mapping, with the GIL held: ~10 ms a launch); without it, vfork() costs a fraction.
    switch = isolation.setpriv_prefix(uid, config.bot_gid) if uid is not None else []
    identity: dict[str, Any] = {}
    if uid is not None and switch is None:
        identity = {"user": uid, "group": config.bot_gid, "extra_groups": []}
    # The cgroup is entered as root, before the uid switch; Popen's own switch comes first,
    # so without `setpriv` the manager moves the pid right after the spawn (a short window).
    enter = enter_prefix(cgroup) if cgroup is not None and not identity else []
    # Mounts a private /tmp and /dev/shm (sandbox.py); as root, so before the uid switch.
    private_tmp = (
        []
        if identity
        else private_tmp_prefix(config.tmp_mb, workdir=workdir, env=env, command=command)
    )
    try:
        proc = subprocess.Popen(
            [*enter, *private_tmp, *(switch or []), *(prefix or []), *command],
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
    if cgroup is not None and not enter:
        for procs in cgroup.procs_files():
            with suppress(ProcessLookupError):  # it already ended
                procs.write_text(str(proc.pid))
    isolation.send_secret_env(write_fd, spec.secret_env, name=spec.bot_id)
    if config.nice:  # before the runtime's first thread: everything after inherits it
        isolation.lower_priority(proc.pid, config.nice)
    if prefix is None:
        isolation.apply_limits_after_spawn(proc.pid, limits)
    return proc

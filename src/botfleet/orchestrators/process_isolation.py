"""How the process backend keeps bots apart: uids, working directories, limits, the secret pipe.

A bot is untrusted code. When the manager runs as root, each bot runs under an unprivileged uid
of its own (a dedicated range, one shared primary gid, no supplementary groups), so it cannot
read another bot's /proc/PID/environ, memory or files, nor the manager's (its data folder is
0700). The pool of those uids (claimed by mkdir of the bot's working directory, never handed
out while anything of the previous bot remains) is `process.uid_pool`. Every process of that
uid is the bot's: stop and remove kill them all, wherever they moved (setsid cannot escape a
uid). The uid and gids are switched by util-linux `setpriv` as the first prefix of the bot's
command (Popen's own switch, used without `setpriv`, would make CPython fork the whole manager
instead of vfork). Resource limits are set by util-linux `prlimit`, the next prefix, so they
hold before the bot's first instruction (no preexec_fn, which is unsafe with threads); without
`prlimit`, `resource.prlimit` sets them on the pid right after the spawn (a short window).
Memory, pids and CPU/IO weight per bot (all its processes together) come from a cgroup per bot
where one can be made (process/cgroups.py); elsewhere RLIMIT_AS/NPROC/NOFILE are what holds.

Secrets (the bot token, its secrets, a Redis URL with a password) never enter the environment:
they go through a pipe whose read end the child inherits (`botfleet.runtime.env.SECRET_ENV_FD`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import resource
import select
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from pathlib import Path

log = logging.getLogger(__name__)

#: Where bots' working directories live when they run under their own uids: outside the
#: manager's data folder, which is 0700.
DEFAULT_ISOLATED_WORK_ROOT = Path("/var/lib/botfleet/bots")
DEFAULT_STATE_ROOT = Path("/var/lib/botfleet/state")
_PROBE_TIMEOUT_S = 30.0
_SWEEP_ROUNDS = 50


# -- /proc --------------------------------------------------------------------------------------


def _pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def _live_uids(pid: int) -> tuple[str, set[int]] | None:
    """(state, {real, effective, saved, fs uid}) of a process; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    state, uids = "", set()
    for line in text.splitlines():
        if line.startswith("State:"):
            state = line.split()[1]
        elif line.startswith("Uid:"):
            uids = {int(u) for u in line.split()[1:]}
    return state, uids


def processes_of_uid(uid: int) -> list[int]:
    """Pids of the live (non-zombie) processes that hold `uid` in any of their uids."""
    found = []
    for pid in _pids():
        info = _live_uids(pid)
        if info is not None and info[0] not in "ZX" and uid in info[1]:
            found.append(pid)
    return found


def uids_in_use(lo: int, hi: int) -> set[int]:
    """The uids in [lo, hi) that some live process holds now."""
    used: set[int] = set()
    for pid in _pids():
        info = _live_uids(pid)
        if info is not None and info[0] not in "ZX":
            used |= {u for u in info[1] if lo <= u < hi}
    return used


def kill_uid(uid: int) -> bool:
    """SIGKILL every process of `uid` until none is left (a fork loop is outrun: each round kills
    what the last one missed). True when none is left."""
    for _ in range(_SWEEP_ROUNDS):
        pids = processes_of_uid(uid)
        if not pids:
            return True
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    return not processes_of_uid(uid)


def _start_time(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[19])


def kill_group(pgid: int, leader_starttime: int, sig: signal.Signals) -> None:
    """Signal a bot's process group, also after its leader exited (its children keep the group).

    A group id cannot be reused while any member lives; once every member is gone, a new process
    may get the number. A live process with that pid but another start time proves exactly
    that, and then nothing is signalled.
    """
    now = _start_time(pgid)
    if now is not None and now != leader_starttime:
        return
    with suppress(ProcessLookupError):
        os.killpg(pgid, sig)


# -- working directories and uids --------------------------------------------------------------


def private_dir(path: Path) -> None:
    """Create `path` and its missing parents for the manager alone (0700)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def ensure_traversable_root(root: Path, mode: int = 0o711) -> None:
    """Create `root` and its missing parents traversable by bot uids (the manager's umask is
    0077, so plain mkdir would make them 0700); listing `root` stays the manager's."""
    missing = []
    here = root
    while not here.exists():
        missing.append(here)
        here = here.parent
    for path in reversed(missing):
        with suppress(FileExistsError):
            path.mkdir()
            path.chmod(mode)
    if root.stat().st_mode & 0o777 != mode and root.stat().st_uid == os.geteuid():
        root.chmod(mode)


def hand_over_tree(path: Path, uid: int, gid: int) -> None:
    """Make a bot's state directory and what it holds belong to `uid` (the attempt about to
    run, or root between attempts), so a uid handed to another bot later never owns it.

    Walked by file descriptor (`os.fwalk`) and changed with `follow_symlinks=False`: a symlink
    a bot planted is never followed out of the tree, even if a directory is swapped for one
    meanwhile. A file with several links is left alone: it may be a hard link to a file
    outside the tree, which must not change hands."""
    os.chown(path, uid, gid, follow_symlinks=False)
    for _top, dirs, files, dir_fd in os.fwalk(path, follow_symlinks=False):
        for name in dirs + files:
            with suppress(FileNotFoundError):
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode) or info.st_nlink == 1:
                    os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)


def remove_dir(path: Path) -> None:
    """Remove a bot's working directory, whatever modes the bot gave its contents (a manager that
    is not root cannot enter a directory the bot made 0000 until it opens it again)."""
    if not path.exists():
        return
    if os.geteuid() != 0:
        for top, dirs, _files in os.walk(path):
            for name in dirs:
                sub = os.path.join(top, name)
                if not os.path.islink(sub):
                    with suppress(OSError):
                        os.chmod(sub, 0o700)
    shutil.rmtree(path)


# -- limits -------------------------------------------------------------------------------------


def clamp_limits(limits: Mapping[int, int]) -> dict[int, int]:
    """The wanted limits, none above the manager's hard limit (an unprivileged uid cannot raise
    it, and prlimit would then refuse to start the bot); 0 means 'leave as it is'."""
    result = {}
    for which, value in limits.items():
        if value <= 0:
            continue
        hard = resource.getrlimit(which)[1]
        result[which] = value if hard == resource.RLIM_INFINITY else min(value, hard)
    return result


_PRLIMIT_OPTION = {
    resource.RLIMIT_AS: "--as",
    resource.RLIMIT_NPROC: "--nproc",
    resource.RLIMIT_NOFILE: "--nofile",
}


@functools.cache
def _prlimit_binary() -> str | None:
    return shutil.which("prlimit")


def prlimit_prefix(limits: Mapping[int, int]) -> list[str] | None:
    """`prlimit --as=N:N ... --` (soft = hard: the bot cannot raise them), or None without the
    util-linux command (looked up once per manager)."""
    binary = _prlimit_binary()
    if binary is None or not limits:
        return None if binary is None else []
    return [binary, *(f"{_PRLIMIT_OPTION[k]}={v}:{v}" for k, v in limits.items()), "--"]


@functools.cache
def _setpriv_binary() -> str | None:
    return shutil.which("setpriv")


def setpriv_prefix(uid: int, gid: int) -> list[str] | None:
    """`setpriv --reuid=U --regid=G --clear-groups --`: the bot's real, effective and saved uid
    and gid, and no supplementary groups, set before it execs the rest of the command (what
    Popen's user/group/extra_groups=[] do, without forcing a fork of the manager); None without
    the util-linux command (looked up once per manager)."""
    binary = _setpriv_binary()
    if binary is None:
        return None
    return [binary, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]


def lower_priority(pid: int, increment: int) -> None:
    """Make a just-spawned bot `increment` nicer than the manager (a scheduling preference, not
    a limit: an idle machine still gives it every cycle). Set on the pid right after the spawn,
    while it still runs the launch prefixes; its threads and children inherit it."""
    with suppress(ProcessLookupError):
        os.setpriority(
            os.PRIO_PROCESS, pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + increment)
        )


def apply_limits_after_spawn(pid: int, limits: Mapping[int, int]) -> None:
    """The fallback without `prlimit`: limits on the running pid, a moment after it started."""
    for which, value in limits.items():
        with suppress(ProcessLookupError):
            resource.prlimit(pid, which, (value, value))


# -- the probe ----------------------------------------------------------------------------------


def probe_as_uid(argv: Sequence[str], *, uid: int, gid: int, env: Mapping[str, str]) -> str | None:
    """Run `argv` as `uid` (cwd /); None when it exits 0, else why not (one line)."""
    try:
        done = subprocess.run(
            list(argv),
            env=dict(env),
            cwd="/",
            user=uid,
            group=gid,
            extra_groups=[],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return f"{' '.join(argv[:3])} cannot run as uid {uid}: {exc}"
    if done.returncode == 0:
        return None
    lines = done.stderr.decode(errors="replace").strip().splitlines() or ["(no output)"]
    return f"{' '.join(argv)} failed as uid {uid} (exit {done.returncode}): {lines[-1]}"


# -- the secret pipe ----------------------------------------------------------------------------


def send_secret_env(write_fd: int, secret_env: Mapping[str, str], *, name: str) -> None:
    """Write the secret variables as one JSON object into the pipe, then close it. A payload that
    fits in PIPE_BUF is written at once (a pipe always takes that much without blocking); a
    larger one from a short daemon thread, since it must not block the launch. A child that died
    before reading (EPIPE) is no error: its exit tells the rest."""
    payload = json.dumps(dict(secret_env)).encode()
    if len(payload) <= select.PIPE_BUF:
        try:
            os.write(write_fd, payload)
        except OSError as exc:
            log.debug("secret pipe of %s closed early: %s", name, exc.strerror)
        finally:
            os.close(write_fd)
        return

    def write() -> None:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(write_fd, view) :]
        except OSError as exc:  # BrokenPipeError: the bot is gone; it will be reported
            log.debug("secret pipe of %s closed early: %s", name, exc.strerror)
        finally:
            os.close(write_fd)

    threading.Thread(target=write, name=f"secret-pipe-{name}", daemon=True).start()

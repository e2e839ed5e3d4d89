"""Each bot's private, size-capped /tmp and /dev/shm (process backend, manager as root).

A launch prefix: util-linux `unshare --mount --propagation private` gives the bot a mount
namespace of its own, in which a small shell mounts a tmpfs of `tmp_mb` MiB (mode 1777) on /tmp
and another on /dev/shm, before the uid switch (the next prefix) takes the right to mount away.
So a bot cannot fill the host's /tmp or /dev/shm (it gets ENOSPC at its cap), cannot read what
another bot left there, and what it leaves there is gone with its last process. The pages are
memory: with a cgroup per bot they count against the bot's memory limit.

Directories the bot needs that lie under /tmp or /dev/shm (its working directory, directories
named in its environment, the interpreter's installation, the manager's import path) are bound
into its private ones at the same paths. Where the manager is not root, or the namespace cannot
be made (no `unshare`, a container without CAP_SYS_ADMIN), the decision says so once in the log
and bots share the host's /tmp and /dev/shm.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

#: Where each bot gets its own tmpfs.
PRIVATE_POINTS = ("/tmp", "/dev/shm")
_PROBE_TIMEOUT_S = 10.0

#: $1 size in MiB, $2 the working directory, $3 how many paths to keep follow, then the paths,
#: then the command. The old /tmp stays reachable as the shell's cwd while the tmpfs covers it,
#: so kept paths are bound from it by relative name (mount(8) must not canonicalize them).
_SCRIPT = r"""
set -eu
size=$1 workdir=$2 count=$3
shift 3
mask=$(umask)
umask 022
for point in /tmp /dev/shm; do
  cd "$point"
  mount -t tmpfs -o "size=${size}m,mode=1777,nosuid,nodev" botfleet-private "$point"
  i=0
  for path in "$@"; do
    [ "$i" -lt "$count" ] || break
    i=$((i + 1))
    case $path in
      "$point"/*)
        mkdir -p "$path"
        mount --no-canonicalize --bind "./${path#"$point"/}" "$path" ;;
    esac
  done
done
umask "$mask"
cd "$workdir"
shift "$count"
exec "$@"
"""


@functools.cache
def _tools() -> tuple[str, str, str] | None:
    found = (shutil.which("unshare"), shutil.which("sh"), shutil.which("mount"))
    return None if None in found else found  # type: ignore[return-value]


@functools.cache
def unavailable_reason(tmp_mb: int) -> str | None:
    """Why bots cannot get a private /tmp here (None: they can); decided once, and logged."""
    why = _why_not(tmp_mb)
    if why is None:
        log.info("process backend: each bot has a private /tmp and /dev/shm of %d MiB", tmp_mb)
    elif tmp_mb:
        log.warning(
            "process backend: bots share the host's /tmp and /dev/shm (%s): a bot can fill "
            "them, and read what another bot left there under the same uid",
            why,
        )
    return why


def _why_not(tmp_mb: int) -> str | None:
    if tmp_mb <= 0:
        return "turned off (BOTFLEET_PROCESS_TMP_MB=0)"
    if os.geteuid() != 0:
        return "the manager is not root, so it cannot mount a private /tmp for a bot"
    tools = _tools()
    if tools is None:
        return "util-linux `unshare` and `mount`, or `sh`, are missing"
    unshare, sh, _ = tools
    probe = [unshare, "--mount", "--propagation", "private", "--", sh, "-c", _SCRIPT]
    probe += ["sh", "1", "/", "0", "true"]
    try:
        done = subprocess.run(
            probe, capture_output=True, timeout=_PROBE_TIMEOUT_S, check=False, cwd="/"
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the mount namespace probe failed: {exc}"
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).decode(errors="replace").strip()[-300:]
        return f"the mount namespace probe failed: {detail or f'exit {done.returncode}'}"
    return None


def _kept_paths(workdir: Path, env: Mapping[str, str], command: Sequence[str]) -> Iterable[str]:
    """Directories under /tmp or /dev/shm the bot needs, outermost only: its working
    directory, paths named in its environment, its interpreter's installation, and where the
    manager imports from (an editable install's sources, which the bot's runtime imports too:
    a checkout under /tmp would otherwise vanish from its view)."""
    points = [os.path.realpath(p) for p in PRIVATE_POINTS]
    wanted = [str(workdir), *sys.path]
    wanted += [part for value in env.values() for part in value.split(os.pathsep)]
    if command and os.path.isabs(command[0]):  # a virtualenv's root: <root>/bin/python
        wanted.append(os.path.dirname(os.path.dirname(command[0])))
    found: set[str] = set()
    for path in wanted:
        if not os.path.isabs(path):
            continue
        real = os.path.realpath(path)
        if os.path.isdir(real) and any(real.startswith(point + "/") for point in points):
            found.add(real)
    outermost = sorted(found)
    return [p for p in outermost if not any(p.startswith(q + "/") for q in outermost if q != p)]


def private_tmp_prefix(
    tmp_mb: int, *, workdir: Path, env: Mapping[str, str], command: Sequence[str]
) -> list[str]:
    """The prefix that runs the rest of the command with a private /tmp and /dev/shm of
    `tmp_mb` MiB each, to go before the uid switch; [] where that is not possible (logged
    once, see `unavailable_reason`)."""
    if unavailable_reason(tmp_mb) is not None:
        return []
    tools = _tools()
    assert tools is not None  # the reason said so
    unshare, sh, _ = tools
    kept = list(_kept_paths(workdir, env, command))
    head = [unshare, "--mount", "--propagation", "private", "--", sh, "-c", _SCRIPT]
    return [*head, "botfleet-sandbox", str(tmp_mb), str(workdir), str(len(kept)), *kept]

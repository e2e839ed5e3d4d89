"""What a bot's uid leaves outside its working directory: found, and removed before it is reused.

A bot's processes die with it, but the files it made in the machine's shared writable places
(`SHARED_PLACES`) and its SysV IPC objects (shared memory, semaphores, message queues) stay,
owned by its uid: the next bot given that uid could read them. Finding them must stay cheap with
thousands of bots, since the pool looks before it hands out uids: each place is walked to
`MAX_DEPTH` levels and at most `MAX_ENTRIES` entries, by directory descriptor (a directory
swapped for a symlink is never followed), never across a mount, and never into the manager's
own roots (`keep`: the bots' working directories and state, which may lie below /tmp in a test
or a small setup, and are handled by the backend). What is nested deeper inside
another bot's world-writable directory is not seen; it goes when that bot's leftovers go (its
whole tree is removed).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: Writable by every uid and kept after a process ends (those that exist on the machine count).
SHARED_PLACES = tuple(Path(p) for p in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue"))
MAX_DEPTH = 3
MAX_ENTRIES = 20_000  # per place and walk: ~20 ms of lstat
_IPC_KINDS = {"shm": "-m", "sem": "-s", "msg": "-q"}  # /proc/sysvipc/<kind>, ipcrm's option
_IPCRM_TIMEOUT_S = 10.0
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

#: visit(dir_fd, name, stat) -> True when the entry is gone (removed), so not to be entered.
Visit = Callable[[int, str, os.stat_result], bool]
_Inode = tuple[int, int]


@dataclass
class Found:
    """The uids in a range that own something, and whether every entry was looked at."""

    owners: set[int] = field(default_factory=set)
    complete: bool = True


# -- files --------------------------------------------------------------------------------------


def _inodes(paths: tuple[Path, ...]) -> frozenset[_Inode]:
    found = set()
    for path in paths:
        with suppress(OSError):
            info = path.stat()
            found.add((info.st_dev, info.st_ino))
    return frozenset(found)


def _walk(
    place: Path, visit: Visit, *, max_depth: int, max_entries: int, keep: tuple[Path, ...]
) -> bool:
    """Visit the entries of `place`, each directory's entries before any deeper one, except
    the `keep` directories and what they hold; False when the entry budget ran out first. A
    place that does not exist has nothing."""
    try:
        top = os.open(place, _DIR_FLAGS)
    except OSError:
        return True
    walk = _Walk(os.fstat(top).st_dev, visit, max_depth, max_entries, _inodes(keep))
    try:
        return _walk_dir(top, 1, walk)
    finally:
        os.close(top)


@dataclass
class _Walk:
    dev: int
    visit: Visit
    max_depth: int
    budget: int  # entries still to look at
    keep: frozenset[_Inode]


def _walk_dir(fd: int, depth: int, walk: _Walk) -> bool:
    with os.scandir(fd) as listing:
        entries = list(itertools.islice(listing, walk.budget + 1))
    complete = len(entries) <= walk.budget
    subdirs = []
    for entry in entries[: walk.budget]:
        walk.budget -= 1
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if (info.st_dev, info.st_ino) in walk.keep or walk.visit(fd, entry.name, info):
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_dev == walk.dev and depth < walk.max_depth:
            subdirs.append(entry.name)
    for name in subdirs:
        if walk.budget <= 0:
            return False
        try:
            sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError:  # gone, swapped for a symlink, or not ours to read
            continue
        try:
            complete &= _walk_dir(sub, depth + 1, walk)
        finally:
            os.close(sub)
    return complete


def file_owners(
    lo: int,
    hi: int,
    places: tuple[Path, ...] = SHARED_PLACES,
    *,
    max_depth: int = MAX_DEPTH,
    max_entries: int = MAX_ENTRIES,
    keep: tuple[Path, ...] = (),
) -> Found:
    """The uids in [lo, hi) that own an entry in the shared places."""
    found = Found()

    def note(_fd: int, _name: str, info: os.stat_result) -> bool:
        if lo <= info.st_uid < hi:
            found.owners.add(info.st_uid)
        return False

    for place in places:
        found.complete &= _walk(
            place, note, max_depth=max_depth, max_entries=max_entries, keep=keep
        )
    return found


def remove_files_of(
    uid: int,
    places: tuple[Path, ...] = SHARED_PLACES,
    *,
    max_depth: int = MAX_DEPTH,
    max_entries: int = MAX_ENTRIES,
    keep: tuple[Path, ...] = (),
) -> list[str]:
    """Delete every entry `uid` owns in the shared places (a directory with all it holds);
    what could not be deleted, or could not be looked at, is returned (empty: none remains)."""
    remains: list[str] = []

    def delete(fd: int, name: str, info: os.stat_result) -> bool:
        if info.st_uid != uid:
            return False
        try:
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(name, dir_fd=fd)
            else:
                os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            remains.append(f"{name}: {exc.strerror}")
        return True

    for place in places:
        if not _walk(place, delete, max_depth=max_depth, max_entries=max_entries, keep=keep):
            remains.append(f"{place}: more than {max_entries} entries, not all looked at")
    return remains


# -- SysV IPC -----------------------------------------------------------------------------------


def parse_sysvipc(text: str) -> list[tuple[int, set[int]]]:
    """(id, {owner uid, creator uid}) of each object in a /proc/sysvipc/{shm,sem,msg} table:
    either uid may attach, change or remove it."""
    lines = text.splitlines()
    if not lines:
        return []
    header = lines[0].split()
    uid_at, cuid_at = header.index("uid"), header.index("cuid")
    objects = []
    for line in lines[1:]:
        cells = line.split()
        if len(cells) > max(uid_at, cuid_at):
            objects.append((int(cells[1]), {int(cells[uid_at]), int(cells[cuid_at])}))
    return objects


def _ipc_objects(kind: str) -> list[tuple[int, set[int]]]:
    try:
        return parse_sysvipc(Path(f"/proc/sysvipc/{kind}").read_text())
    except OSError:  # no SysV IPC in this kernel: nothing can be left there
        return []


def ipc_owners(lo: int, hi: int) -> set[int]:
    """The uids in [lo, hi) that own or created a SysV IPC object."""
    return {
        uid
        for kind in _IPC_KINDS
        for _id, owners in _ipc_objects(kind)
        for uid in owners
        if lo <= uid < hi
    }


def ipc_of(uid: int) -> dict[str, list[int]]:
    """The ids of the SysV IPC objects `uid` owns or created, by kind."""
    found = {kind: [i for i, owners in _ipc_objects(kind) if uid in owners] for kind in _IPC_KINDS}
    return {kind: ids for kind, ids in found.items() if ids}


@functools.cache
def _ipcrm_binary() -> str | None:
    return shutil.which("ipcrm")


def remove_ipc_of(uid: int) -> list[str]:
    """Remove `uid`'s SysV IPC objects with util-linux `ipcrm`; what remains is returned (a
    shared memory segment another process still has attached stays until it detaches, and the
    uid could still attach it by id)."""
    objects = ipc_of(uid)
    if not objects:
        return []
    binary = _ipcrm_binary()
    if binary is None:
        return [f"{kind} {ids}: no ipcrm to remove them" for kind, ids in objects.items()]
    argv = [binary]
    for kind, ids in objects.items():
        for ipc_id in ids:
            argv += [_IPC_KINDS[kind], str(ipc_id)]
    with suppress(OSError, subprocess.SubprocessError):  # judged by what remains below
        subprocess.run(argv, capture_output=True, timeout=_IPCRM_TIMEOUT_S, check=False)
    return [f"SysV {kind} {ids}" for kind, ids in ipc_of(uid).items()]


# -- both ---------------------------------------------------------------------------------------


def owners(lo: int, hi: int, keep: tuple[Path, ...] = ()) -> Found:
    """The uids in [lo, hi) that left files in the shared places or SysV IPC objects."""
    found = file_owners(lo, hi, keep=keep)
    found.owners |= ipc_owners(lo, hi)
    return found


def remove_all_of(uid: int, keep: tuple[Path, ...] = ()) -> list[str]:
    """Delete `uid`'s files in the shared places and its IPC objects (its processes must be gone
    first, or they make more); what remains, empty when nothing does."""
    return remove_ipc_of(uid) + remove_files_of(uid, keep=keep)

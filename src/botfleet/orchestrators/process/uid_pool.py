"""The pool of the bots' uids: which uid a new bot gets, and what must be gone before it may.

A uid is claimed by creating the bot's working directory `<work_root>/<uid>` (mkdir is atomic:
two launches, or two managers sharing the work root, never get one uid); the directory is
removed, and the uid freed, when the workload is removed. A uid is handed out only when nothing
of its previous bot remains: no process holds it, and it owns no file in a shared writable place
and no SysV IPC object (`leftovers`). Removal deletes those first (`UidClaims.clean`); a uid
whose leftovers survive is tainted and stays out. Both checks look at the machine, not at memory,
so they hold across a manager restart; so does the round-robin position (`.next-uid` in the work
root), so a restarted manager continues after the last uid it gave instead of at the base.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from contextlib import suppress
from pathlib import Path

from botfleet.orchestrators import process_isolation as isolation
from botfleet.orchestrators.process import leftovers

log = logging.getLogger(__name__)

CURSOR_FILE = ".next-uid"


def read_cursor(text: str, uid_base: int, uid_count: int) -> int:
    """The next uid to try from the cursor file's text; the base when it is missing, garbage or
    out of the range (the range was changed)."""
    try:
        uid = int(text.strip())
    except ValueError:
        return uid_base
    return uid if uid_base <= uid < uid_base + uid_count else uid_base


def after(uid: int, uid_base: int, uid_count: int) -> int:
    """The uid after `uid`, round the range."""
    return uid + 1 if uid + 1 < uid_base + uid_count else uid_base


class UidClaims:
    """Hands out the bots' uids: one nothing of a previous bot holds, with its new working
    directory (0700, owned by it).

    Finding a free uid must not cost a burst of launches a scan of every process and shared
    place per launch (a thousand bots: a thousand /proc reads and a walk of /tmp each, and mkdir
    failing on every claimed uid from the start of the range). So the scan is reused for
    `scan_ttl_s`, and the search starts after the last uid claimed. Reusing a scan is safe: a uid
    free in it and without a directory can only gain a process, a file or an IPC object through
    a claim (mkdir, which fails for the second claimer); the one way to leave something behind
    without a directory is a removal whose cleanup failed, and `taint` keeps such a uid busy here
    until a complete fresh scan shows it free (another manager's such uid is seen at its next
    scan, at most `scan_ttl_s` later).
    """

    def __init__(
        self,
        work_root: Path,
        uid_base: int,
        uid_count: int,
        gid: int,
        *,
        scan_ttl_s: float = 1.0,
        keep: tuple[Path, ...] = (),
    ) -> None:
        """`keep`: the manager's directories the bots' uids own things in (their state), never
        leftovers; the work root is one of them."""
        self.work_root, self.uid_base, self.uid_count, self.gid = (
            work_root,
            uid_base,
            uid_count,
            gid,
        )
        self.scan_ttl_s = scan_ttl_s
        self.keep = (work_root, *keep)
        self._lock = threading.Lock()
        self._busy: set[int] = set()
        self._scanned_at = -math.inf
        self._tainted: set[int] = set()
        self._next: int | None = None  # read from the cursor file at the first claim
        self._told_incomplete = False

    def taint(self, uid: int) -> None:
        """Something of `uid`'s bot survived its removal: never hand it out until a scan finds
        nothing of it."""
        with self._lock:
            self._tainted.add(uid)

    def clean(self, uid: int) -> bool:
        """Delete what `uid` left in the shared places and its IPC objects (its processes are
        gone: `process_isolation.kill_uid`); False, and the uid tainted, when anything remains."""
        remains = leftovers.remove_all_of(uid, self.keep)
        if remains:
            log.warning(
                "bot uid %d stays out of the pool: its leftovers could not all be removed (%s)",
                uid,
                "; ".join(remains[:5]),
            )
            self.taint(uid)
        return not remains

    def _scan(self) -> None:
        end = self.uid_base + self.uid_count
        found = leftovers.owners(self.uid_base, end, self.keep)
        self._busy = isolation.uids_in_use(self.uid_base, end) | found.owners
        if found.complete:
            self._tainted &= self._busy
        elif not self._told_incomplete:
            self._told_incomplete = True
            log.warning(
                "the shared places hold more than %d entries: bot uids' files there were not all "
                "looked at",
                leftovers.MAX_ENTRIES,
            )
        self._scanned_at = time.monotonic()

    def claim(self) -> tuple[int, Path]:
        with self._lock:
            if self._next is None:
                isolation.ensure_traversable_root(self.work_root)
                self._next = self._load_cursor()
            if time.monotonic() - self._scanned_at > self.scan_ttl_s:
                self._scan()
            for offset in range(self.uid_count):
                uid = self.uid_base + (self._next - self.uid_base + offset) % self.uid_count
                if uid in self._busy or uid in self._tainted:
                    continue
                path = self.work_root / str(uid)
                try:
                    path.mkdir(mode=0o700)
                except FileExistsError:
                    continue
                except FileNotFoundError:  # the root was removed meanwhile: make it again
                    isolation.ensure_traversable_root(self.work_root)
                    path.mkdir(mode=0o700)
                try:
                    os.chown(path, uid, self.gid)
                    path.chmod(0o700)
                except OSError:
                    path.rmdir()
                    raise
                self._next = after(uid, self.uid_base, self.uid_count)
                self._save_cursor(self._next)
                return uid, path
        end = self.uid_base + self.uid_count
        raise OSError(f"every uid of {self.uid_base}..{end - 1} is taken or not clean yet")

    def _load_cursor(self) -> int:
        try:
            text = (self.work_root / CURSOR_FILE).read_text()
        except (OSError, UnicodeDecodeError):
            return self.uid_base
        return read_cursor(text, self.uid_base, self.uid_count)

    def _save_cursor(self, uid: int) -> None:
        """Written whole or not at all (rename); a position only, so a failure costs nothing
        but a restart beginning at the base again (the checks above still hold)."""
        tmp = self.work_root / f"{CURSOR_FILE}.{os.getpid()}.{threading.get_ident()}"
        try:
            tmp.write_text(f"{uid}\n")
            tmp.replace(self.work_root / CURSOR_FILE)
        except OSError as exc:
            log.debug("cannot keep the uid pool's position in %s: %s", self.work_root, exc)
            with suppress(OSError):
                tmp.unlink()

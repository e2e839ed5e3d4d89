"""The rules under the uid pool (issue 27, point 4): where the round-robin resumes, whose SysV IPC
objects are whose, and what the bounded walk of the shared places sees, skips and deletes."""

from __future__ import annotations

import os
from pathlib import Path

from botfleet.orchestrators.process import leftovers
from botfleet.orchestrators.process.uid_pool import after, read_cursor

ME = os.geteuid()

SHM = """       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap
    402152         20   600                    56  4219  4819      6   101   104   101   104 1796621802 1796621802 1796621742                  4096                     0
         0         21  1600                  4096  4219  4819      1   300   104   200   104 0 0 0 4096 0
"""  # noqa: E501
SEM = """       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime
    123456          7   600          1   250   250   250   250          0 1796621742
"""
MSG = """       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime
"""  # noqa: E501


def test_the_pool_resumes_after_the_last_uid_and_wraps_round_its_range() -> None:
    assert read_cursor("200007\n", 200000, 10) == 200007
    for garbage in ("", "x", "199999", "200010", "-1"):  # missing, broken, or the range changed
        assert read_cursor(garbage, 200000, 10) == 200000
    assert after(200003, 200000, 10) == 200004
    assert after(200009, 200000, 10) == 200000


def test_an_ipc_object_is_its_owners_and_its_creators() -> None:
    assert leftovers.parse_sysvipc(SHM) == [(20, {101}), (21, {300, 200})]
    assert leftovers.parse_sysvipc(SEM) == [(7, {250})]
    assert leftovers.parse_sysvipc(MSG) == []
    assert leftovers.parse_sysvipc("") == []


def _tree(place: Path) -> None:
    (place / "a" / "b" / "c" / "d").mkdir(parents=True)
    (place / "a" / "b" / "c" / "d" / "deep").write_text("x")
    (place / "top").write_text("x")


def test_the_walk_sees_what_the_uid_owns_within_its_bounds(tmp_path: Path) -> None:
    _tree(tmp_path)
    assert leftovers.file_owners(ME, ME + 1, (tmp_path,)).owners == {ME}
    assert leftovers.file_owners(ME + 1, ME + 2, (tmp_path,)).owners == set()
    assert leftovers.file_owners(ME, ME + 1, (tmp_path / "missing",)).complete
    # bounded: a budget of 2 entries cannot see all 6; the walk says it is not complete
    assert not leftovers.file_owners(ME, ME + 1, (tmp_path,), max_entries=2).complete
    assert leftovers.file_owners(ME, ME + 1, (tmp_path,), max_entries=100).complete


def test_the_walk_never_follows_a_symlink_out_of_the_place(tmp_path: Path) -> None:
    place, outside = tmp_path / "place", tmp_path / "outside"
    place.mkdir()
    outside.mkdir()
    (outside / "kept").write_text("not a leftover")
    (place / "link").symlink_to(outside)
    assert leftovers.remove_files_of(ME, (place,)) == []
    assert (outside / "kept").exists()  # the link went, never what it points to
    assert list(place.iterdir()) == []


def test_removal_takes_the_uids_entries_whole_and_reports_what_it_could_not_see(
    tmp_path: Path,
) -> None:
    _tree(tmp_path)
    assert leftovers.remove_files_of(ME + 1, (tmp_path,)) == []  # not its: nothing goes
    assert (tmp_path / "top").exists()
    assert leftovers.remove_files_of(ME, (tmp_path,)) == []
    assert list(tmp_path.iterdir()) == []
    _tree(tmp_path)
    (tmp_path / "more").write_text("x")
    remains = leftovers.remove_files_of(ME + 1, (tmp_path,), max_entries=1)
    assert remains and "not all looked at" in remains[0]


def test_the_managers_own_roots_below_a_place_are_neither_seen_nor_deleted(tmp_path: Path) -> None:
    """A work or state root under /tmp (tests, small setups) holds the bots' directories, which
    the backend hands over and removes itself: never leftovers."""
    state = tmp_path / "state"
    (state / "slug").mkdir(parents=True)
    (state / "slug" / "kept").write_text("the bot's state")
    (tmp_path / "junk").write_text("a leftover")
    assert leftovers.remove_files_of(ME, (tmp_path,), keep=(state,)) == []
    assert [p.name for p in tmp_path.iterdir()] == ["state"]
    assert (state / "slug" / "kept").exists()
    assert leftovers.file_owners(ME, ME + 1, (tmp_path,), keep=(state,)).owners == set()
    assert leftovers.file_owners(ME, ME + 1, (tmp_path,)).owners == {ME}

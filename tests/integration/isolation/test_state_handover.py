"""Handing a bot's state directory to its next uid never leaves the tree: a planted symlink or hard
link keeps its owner. Needs root (chown)."""

from __future__ import annotations

from pathlib import Path


def test_handing_over_a_state_never_leaves_the_tree(tmp_path: Path) -> None:
    """The attack: a bot plants, in its state directory, a symlink and a hard link to files
    outside it, hoping the next hand-over (to its next uid, or back to root) gives it those
    files. Neither target changes owner; everything of the tree itself does."""
    from botfleet.orchestrators.process_isolation import hand_over_tree

    outside = tmp_path / "outside"
    outside.mkdir()
    by_symlink, by_hardlink = outside / "shadow", outside / "passwd"
    by_symlink.write_text("root only")
    by_hardlink.write_text("root only")
    tree = tmp_path / "state"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "notes.txt").write_text("mine")
    (tree / "escape").symlink_to(by_symlink)
    (tree / "sub" / "escape-dir").symlink_to(outside, target_is_directory=True)
    (tree / "linked").hardlink_to(by_hardlink)
    hand_over_tree(tree, 54321, 54321)
    for path in (tree, tree / "sub", tree / "sub" / "notes.txt"):
        assert path.stat().st_uid == 54321, path
    for target in (by_symlink, by_hardlink, outside):
        assert target.stat().st_uid == 0, target
    hand_over_tree(tree, 0, 0)
    assert (tree / "sub" / "notes.txt").stat().st_uid == 0

"""Issue 27, point 3 (the manager's side): a full data disk refuses writes, not the manager.

The test mounts a small tmpfs (8 MiB) as the manager's data folder, SQLite database included,
and fills it: writes answer 503 `disk_full` with Retry-After and no traceback in the log, reads
answer 200, and once the filler is deleted writes succeed again, from the same process, and its
loops run. A second run keeps the manager's own log on the full disk too: a log line that cannot
be written costs nothing but the line.

PostgreSQL's disk full (SQLSTATE 53100) is checked on the mapping only:
tests/unit/test_disk_full_mapping.py.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Manager, RedisServer, kill_leftover_bots

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

DISK_BYTES = 8 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0700", "tmpfs", str(mount)],
        check=True,
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


class ManagerOnDisk(Manager):
    """A manager whose own log may be kept off its data folder."""

    log_file: Path | None = None

    @property
    def log_path(self) -> Path:
        return self.log_file or self.data_dir / "manager.log"


@pytest.fixture
def on_small_disk(
    small_disk: Path, tmp_path: Path, redis_server: RedisServer, request: pytest.FixtureRequest
) -> Iterator[ManagerOnDisk]:
    data_dir = small_disk / "data"
    manager = ManagerOnDisk(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'botfleet.db'}",
        redis_url=redis_server.url,
    )
    if not getattr(request, "param", False):  # the log elsewhere, to read it
        manager.log_file = tmp_path / "manager.log"
    try:
        manager.start()
        yield manager
    finally:
        manager.release()
        kill_leftover_bots(data_dir)


def fill(disk: Path) -> Path:
    """Write a file until the disk refuses more (bounded by the disk's size)."""
    filler = disk / "filler"
    # Unbuffered: a buffered file's close flushes what the full disk refused, and raises.
    with filler.open("wb", buffering=0) as handle:
        for _ in range(DISK_BYTES // 65536 + 1):
            try:
                handle.write(b"\0" * 65536)
            except OSError:
                break
        else:
            raise AssertionError("the disk never filled up")
    return filler


def new_user(admin: httpx.Client) -> httpx.Response:
    return admin.post(
        "/admin/users", json={"name": f"u-{uuid.uuid4().hex[:8]}", "max_concurrent_bots": 2}
    )


def assert_disk_full(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.json()["detail"]["code"] == "disk_full", answer.text
    assert int(answer.headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    "on_small_disk", [False, True], ids=["log-elsewhere", "log-on-the-full-disk"], indirect=True
)
def test_a_full_data_disk_refuses_writes_keeps_reads_and_recovers_by_itself(
    on_small_disk: ManagerOnDisk, small_disk: Path
) -> None:
    manager = on_small_disk
    admin = manager.admin()
    created = new_user(admin)
    assert created.status_code == 201, created.text
    owner = httpx.Client(
        base_url=manager.url,
        headers={"Authorization": f"Bearer {created.json()['api_key']}"},
        timeout=30,
    )
    tracebacks = manager.log_path.read_text().count("Traceback")
    filler = fill(small_disk)

    for _ in range(5):
        assert_disk_full(new_user(admin))
        assert_disk_full(owner.post("/bots", json={"bot": "demo", "config": {}}))
    assert admin.get("/admin/users").status_code == 200
    listed = owner.get("/bots")
    assert (listed.status_code, listed.json()["items"]) == (200, [])
    if manager.log_file is not None:
        assert manager.log_path.read_text().count("Traceback") == tracebacks, manager.log_tail()

    filler.unlink()
    assert new_user(admin).status_code == 201  # no restart, nothing truncated by hand
    launched = owner.post("/bots", json={"bot": "demo", "config": {}})
    assert launched.status_code == 201, launched.text
    assert manager.proc is not None and manager.proc.poll() is None
    manager.loop_runs("housekeeping", 1)
    manager.loop_runs("reconciler", 1)
    owner.post(f"/bots/{launched.json()['id']}/stop")
    owner.close()
    admin.close()

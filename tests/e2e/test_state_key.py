"""`state_key`: a bot's persistent directory survives its restarts and relaunches, belongs to
one live bot of one user at a time, is nobody else's to read, and is deleted only on request.
On the process backend (bots under their own uids) and the docker backend (named volumes)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from botfleet.orchestrators.base import StateRef
from botfleet.orchestrators.process_isolation import DEFAULT_STATE_ROOT
from tests.support import Manager, wait_for_status, wait_until

NOTE_LINE = "demo bot state before: "


@pytest.fixture
def manager(any_backend_manager: Manager) -> Manager:
    return any_backend_manager


def start(client: httpx.Client, key: str | None, note: str, **body: Any) -> httpx.Response:
    payload: dict[str, Any] = {"bot": "demo", "config": {"state_note": note}, **body}
    if key is not None:
        payload["state_key"] = key
    return client.post("/bots", json=payload)


def notes_seen(client: httpx.Client, bot_id: str) -> list[str]:
    """What each attempt found in its state directory, from the demo bot's log lines."""
    text = client.get(f"/bots/{bot_id}/logs", params={"tail": 500}).text
    return [line.split(NOTE_LINE, 1)[1] for line in text.splitlines() if NOTE_LINE in line]


def wait_for_notes(client: httpx.Client, bot_id: str, count: int) -> list[str]:
    return wait_until(
        lambda: (seen := notes_seen(client, bot_id)) and len(seen) >= count and seen,
        timeout=60,
        what=f"{count} state lines in the logs of {bot_id}",
    )


def stop(client: httpx.Client, bot_id: str) -> None:
    assert client.post(f"/bots/{bot_id}/stop").status_code == 202
    wait_for_status(client, bot_id, {"completed", "failed"})


def state_path(user_id: str, key: str) -> Path:
    return DEFAULT_STATE_ROOT / StateRef(user_id, key).slug


def volume_name(user_id: str, key: str) -> str:
    return f"botfleet-state-{StateRef(user_id, key).slug}"


def volume_exists(name: str) -> bool:
    return (
        subprocess.run(["docker", "volume", "inspect", name], capture_output=True).returncode == 0
    )


def process_uid(runtime_ref: str) -> int:
    pid = runtime_ref.split("-", 1)[0]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def read_as(uid: int, gid: int, path: Path) -> subprocess.CompletedProcess[str]:
    """Open `path` as another uid, as a bot running under it would."""
    return subprocess.run(
        [sys.executable, "-c", f"print(open({str(path)!r}).read())"],
        user=uid,
        group=gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_state_survives_restart_and_relaunch_and_is_purged_on_request(manager: Manager) -> None:
    user, client = manager.new_user()
    key = f"wa-{uuid.uuid4().hex[:6]}"
    policy = {"max_retries": 1, "backoff_s": 0.2}
    first = start(client, key, "one", restart=policy, config={"state_note": "one"})
    first = start_ok(first)
    assert first["state_key"] == key
    wait_for_status(client, first["id"], {"active"})
    assert wait_for_notes(client, first["id"], 1) == ["[]"]
    stop(client, first["id"])

    # A relaunch finds what the first bot wrote.
    relaunched = client.post(f"/bots/{first['id']}/relaunch")
    assert relaunched.status_code == 201, relaunched.text
    second = relaunched.json()
    assert second["state_key"] == key and second["relaunch_of"] == first["id"]
    wait_for_status(client, second["id"], {"active"})
    assert wait_for_notes(client, second["id"], 1) == ["[one;]"]

    # While it is live, nobody else of this user may hold the key; nothing is created.
    refused = start(client, key, "intruder")
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"]["code"] == "state_in_use"
    assert len(client.get("/bots").json()["items"]) == 2
    # ...and purging the ended bot's state is refused while the relaunch holds it.
    held = client.delete(f"/bots/{first['id']}", params={"purge_state": 1})
    assert held.status_code == 409 and held.json()["detail"]["code"] == "state_in_use"
    assert client.get(f"/bots/{first['id']}").status_code == 200  # nothing deleted
    stop(client, second["id"])

    # Deleting without purge keeps the state: a new bot with the key finds it.
    assert client.delete(f"/bots/{first['id']}").status_code == 204
    third = start_ok(start(client, key, "three"))
    wait_for_status(client, third["id"], {"active"})
    assert wait_for_notes(client, third["id"], 1) == ["[one;one;]"]
    stop(client, third["id"])

    if manager.backend == "process":
        assert state_path(user["id"], key).is_dir()
    else:
        assert volume_exists(volume_name(user["id"], key))
    purged = client.delete(f"/bots/{third['id']}", params={"purge_state": 1})
    assert purged.status_code == 204, purged.text
    if manager.backend == "process":
        assert not state_path(user["id"], key).exists()
    else:
        assert not volume_exists(volume_name(user["id"], key))
    # The next holder of the key starts empty.
    fourth = start_ok(start(client, key, "four"))
    wait_for_status(client, fourth["id"], {"active"})
    assert wait_for_notes(client, fourth["id"], 1) == ["[]"]
    stop(client, fourth["id"])
    assert client.delete(f"/bots/{fourth['id']}", params={"purge_state": 1}).status_code == 204


def test_a_restart_keeps_the_state(manager: Manager) -> None:
    _, client = manager.new_user()
    key = f"r-{uuid.uuid4().hex[:6]}"
    policy = {"max_retries": 1, "backoff_s": 0.2}
    bot = start_ok(
        start(client, key, "x", restart=policy, config={"state_note": "x", "crash_after_s": 2})
    )
    # The second attempt found the first one's note (docker shows the current attempt's logs).
    wait_until(
        lambda: "[x;]" in notes_seen(client, bot["id"]), timeout=60, what="the second attempt"
    )
    done = wait_for_status(client, bot["id"], {"failed", "completed"}, timeout=60)
    assert done["attempt"] == 2
    client.delete(f"/bots/{bot['id']}", params={"purge_state": 1})


def test_another_users_bot_with_the_same_key_sees_nothing(manager: Manager) -> None:
    """The attack: a second user names the first user's state_key to read its state. It gets
    a directory of its own, empty; the first user's notes stay where they were."""
    _, alice = manager.new_user()
    _, mallory = manager.new_user()
    key = f"shared-{uuid.uuid4().hex[:6]}"
    a = start_ok(start(alice, key, "alice-secret"))
    wait_for_status(alice, a["id"], {"active"})
    assert wait_for_notes(alice, a["id"], 1) == ["[]"]
    m = start_ok(start(mallory, key, "mallory"))  # another user: no 409, another directory
    wait_for_status(mallory, m["id"], {"active"})
    assert wait_for_notes(mallory, m["id"], 1) == ["[]"]
    for client, bot in ((alice, a), (mallory, m)):
        stop(client, bot["id"])
        client.delete(f"/bots/{bot['id']}", params={"purge_state": 1})


def test_parallel_posts_one_holder(manager: Manager) -> None:
    """The unique index decides, not a check: of parallel POSTs naming one key, one wins."""
    _, client = manager.new_user()
    key = f"p-{uuid.uuid4().hex[:6]}"
    answers: list[httpx.Response] = []
    barrier = threading.Barrier(6)

    def post() -> None:
        with httpx.Client(base_url=client.base_url, headers=client.headers, timeout=30) as own:
            barrier.wait()
            answers.append(start(own, key, "p"))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] + [409] * 5, [r.text for r in answers]
    assert {r.json()["detail"]["code"] for r in answers if r.status_code == 409} == {"state_in_use"}
    items = client.get("/bots").json()["items"]
    assert len(items) == 1
    stop(client, items[0]["id"])
    client.delete(f"/bots/{items[0]['id']}", params={"purge_state": 1})


def test_bad_state_keys_are_refused(manager: Manager) -> None:
    _, client = manager.new_user()
    for bad in ("", "../etc", "a/b", "x" * 201, 5, ".hidden"):
        response = client.post("/bots", json={"bot": "demo", "config": {}, "state_key": bad})
        assert response.status_code == 422, (bad, response.text)
    assert client.get("/bots").json()["items"] == []


def test_process_state_dir_is_the_bots_alone(manager: Manager) -> None:
    """Process backend: the directory is 0700 and owned by the running attempt's uid; another
    bot's uid cannot read it (the attack), the owner can (so the test can fail), and once the
    attempt's workload is gone the directory is root's again, so a uid handed out later never
    owns it."""
    if manager.backend != "process":
        pytest.skip("uids and directories are the process backend's")
    user, alice = manager.new_user()
    _, mallory = manager.new_user()
    key = f"own-{uuid.uuid4().hex[:6]}"
    a = start_ok(start(alice, key, "secret"))
    m = start_ok(start(mallory, None, "m"))
    a_live = wait_for_status(alice, a["id"], {"active"})
    m_live = wait_for_status(mallory, m["id"], {"active"})
    wait_for_notes(alice, a["id"], 1)
    path = state_path(user["id"], key)
    info = path.stat()
    a_uid, m_uid = process_uid(a_live["runtime_ref"]), process_uid(m_live["runtime_ref"])
    assert a_uid != 0 and m_uid != 0 and a_uid != m_uid, "bots must run under their own uids"
    assert info.st_uid == a_uid and info.st_mode & 0o777 == 0o700
    notes = path / "notes.txt"
    attack = read_as(m_uid, info.st_gid, notes)
    assert attack.returncode != 0 and "PermissionError" in attack.stderr, attack
    own = read_as(a_uid, info.st_gid, notes)
    assert own.returncode == 0 and "secret;" in own.stdout, own
    for client, bot in ((alice, a), (mallory, m)):
        stop(client, bot["id"])
    wait_until(lambda: path.stat().st_uid == 0, timeout=30, what="the state to be root's again")
    assert (path / "notes.txt").stat().st_uid == 0
    alice.delete(f"/bots/{a['id']}", params={"purge_state": 1})


def test_docker_state_is_a_volume_and_the_root_stays_read_only(manager: Manager) -> None:
    if manager.backend != "docker":
        pytest.skip("volumes are the docker backend's")
    user, client = manager.new_user()
    key = f"ro-{uuid.uuid4().hex[:6]}"
    bot = start_ok(start(client, key, "v"))
    live = wait_for_status(client, bot["id"], {"active"})
    wait_for_notes(client, bot["id"], 1)
    inspected = json.loads(
        subprocess.run(
            ["docker", "inspect", live["runtime_ref"]], capture_output=True, check=True, text=True
        ).stdout
    )[0]
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    mounts = {m["Destination"]: m for m in inspected["Mounts"]}
    assert set(mounts) == {"/state"}, mounts  # /tmp is a tmpfs, not a mount
    assert mounts["/state"]["Name"] == volume_name(user["id"], key) and mounts["/state"]["RW"]
    assert set(inspected["HostConfig"]["Tmpfs"]) == {"/tmp"}
    # The key itself is in no label.
    assert key not in json.dumps(inspected["Config"]["Labels"])
    stop(client, bot["id"])
    assert client.delete(f"/bots/{bot['id']}", params={"purge_state": 1}).status_code == 204
    assert not volume_exists(volume_name(user["id"], key))


def start_ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return response.json()

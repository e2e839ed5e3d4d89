"""PATCH /bots/{id}/config merges (RFC 7396 JSON Merge Patch), PUT replaces; the bot receives
the whole resulting config, `config_version` rises by one per change, concurrent changes all
land."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx

from tests.support import Manager, wait_for_command, wait_for_status, wait_until

# --- the merge itself: RFC 7396, appendix A -----------------------------------------------------


# --- the runtime applies the newest config only -------------------------------------------------


# --- through the API, with a real demo bot ------------------------------------------------------


def start_active(client: httpx.Client, config: dict[str, Any]) -> str:
    response = client.post("/bots", json={"bot": "demo", "config": config})
    assert response.status_code == 201, response.text
    bot_id = response.json()["id"]
    wait_for_status(client, bot_id, {"active"})
    return bot_id


def change(client: httpx.Client, method: str, bot_id: str, config: Any, **kw: Any) -> dict:
    response = client.request(method, f"/bots/{bot_id}/config", json={"config": config}, **kw)
    assert response.status_code == 202, response.text
    return response.json()


def acked(client: httpx.Client, bot_id: str, command: dict) -> dict:
    done = wait_for_command(client, bot_id, command["id"], {"acked", "failed", "expired"})
    assert done["status"] == "acked", done
    return done


def received(client: httpx.Client, bot_id: str) -> list[dict[str, Any]]:
    """Every config the demo bot says it was reconfigured with, oldest first (its logs)."""
    prefix = "demo bot reconfigured: "
    lines = client.get(f"/bots/{bot_id}/logs").text.splitlines()
    return [json.loads(line[len(prefix) :]) for line in lines if line.startswith(prefix)]


def stop(client: httpx.Client, bot_id: str) -> None:
    client.post(f"/bots/{bot_id}/stop")
    wait_for_status(client, bot_id, {"completed", "failed"})


def test_patch_merges_and_put_replaces(manager: Manager) -> None:
    _, client = manager.new_user()
    bot_id = start_active(client, {"lang": "de", "n": 3})

    # The example: a PATCH of one key keeps the others.
    command = change(client, "PATCH", bot_id, {"n": 4})
    assert command["config"] == {"lang": "de", "n": 4} and command["config_version"] == 2
    acked(client, bot_id, command)
    bot = client.get(f"/bots/{bot_id}").json()
    assert bot["config"] == {"lang": "de", "n": 4} and bot["config_version"] == 2

    # Nested objects merge, null deletes, arrays replace.
    change(client, "PUT", bot_id, {"lang": "de", "drop": 1, "ui": {"a": 1, "b": {"c": 2, "d": 3}}})
    patch = {"drop": None, "ui": {"a": None, "b": {"d": 4, "e": 5}}, "tags": ["x", "y"]}
    merged = {"lang": "de", "ui": {"b": {"c": 2, "d": 4, "e": 5}}, "tags": ["x", "y"]}
    command = change(client, "PATCH", bot_id, patch)
    assert command["config"] == merged and command["config_version"] == 4
    acked(client, bot_id, command)
    command = change(client, "PATCH", bot_id, {"tags": ["z"]})
    merged["tags"] = ["z"]
    assert command["config"] == merged and command["config_version"] == 5
    acked(client, bot_id, command)

    # The bot itself received the whole merged config (the demo bot prints what it got).
    assert received(client, bot_id)[-1] == merged
    assert client.get(f"/bots/{bot_id}").json()["config"] == merged

    # PUT replaces the whole config: keys it does not name are gone.
    command = change(client, "PUT", bot_id, {"lang": "fr"})
    assert command["config"] == {"lang": "fr"} and command["config_version"] == 6
    acked(client, bot_id, command)
    bot = client.get(f"/bots/{bot_id}").json()
    assert bot["config"] == {"lang": "fr"} and bot["config_version"] == 6
    assert received(client, bot_id)[-1] == {"lang": "fr"}

    # RFC 7396's own media type is accepted too.
    response = client.patch(
        f"/bots/{bot_id}/config",
        content=json.dumps({"config": {"n": 1}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 202 and response.json()["config"] == {"lang": "fr", "n": 1}
    versions = [c["config_version"] for c in client.get(f"/bots/{bot_id}/commands").json()["items"]]
    assert versions == [7, 6, 5, 4, 3, 2], "one version per change, newest first"
    stop(client, bot_id)


def test_a_patch_merges_into_changes_not_yet_acknowledged(manager: Manager) -> None:
    """A silent bot never acknowledges: each PATCH still builds on the one before."""
    _, client = manager.new_user()
    bot = client.post("/bots", json={"bot": "demo", "config": {"silent": True}}).json()
    wait_for_status(client, bot["id"], {"starting"})
    first = change(client, "PATCH", bot["id"], {"a": 1})
    second = change(client, "PATCH", bot["id"], {"b": 2})
    assert first["config"] == {"silent": True, "a": 1}
    assert second["config"] == {"silent": True, "a": 1, "b": 2}
    assert client.get(f"/bots/{bot['id']}").json()["config"] == {"silent": True}, (
        "the bot's config is what it acknowledged"
    )
    stop(client, bot["id"])


def test_a_refused_change_is_not_merged_into_the_next(manager: Manager) -> None:
    _, client = manager.new_user()
    bot_id = start_active(client, {"refuse_reconfigure": True})
    refused = change(client, "PATCH", bot_id, {"x": 1})
    assert wait_for_command(client, bot_id, refused["id"], {"failed"})["error"]
    command = change(client, "PATCH", bot_id, {"y": 2})
    assert command["config"] == {"refuse_reconfigure": True, "y": 2}
    assert command["config_version"] == 3
    stop(client, bot_id)


def test_concurrent_patches_of_different_keys_all_land(manager: Manager) -> None:
    _, client = manager.new_user()
    bot_id = start_active(client, {"base": True})
    results: list[httpx.Response] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def patch(i: int) -> None:
        with httpx.Client(base_url=manager.url, headers=client.headers, timeout=60) as c:
            barrier.wait()
            response = c.patch(f"/bots/{bot_id}/config", json={"config": {f"k{i}": i}})
        with lock:
            results.append(response)

    threads = [threading.Thread(target=patch, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status_code for r in results) == [202] * 8, [r.text for r in results]
    assert sorted(r.json()["config_version"] for r in results) == list(range(2, 10))
    expected = {"base": True, **{f"k{i}": i for i in range(8)}}
    last = max((r.json() for r in results), key=lambda c: c["config_version"])
    assert last["config"] == expected, "no change was lost"

    def settled() -> bool:
        bot = client.get(f"/bots/{bot_id}").json()
        return bot["config_version"] == 9 and bot["config"] == expected

    wait_until(settled, timeout=30, what="the bot to acknowledge every change")
    stop(client, bot_id)


def test_limits_apply_to_the_merged_config(manager: Manager) -> None:
    _, client = manager.new_user()
    bot_id = start_active(client, {"blob": "x" * 40_000})
    too_big = client.patch(f"/bots/{bot_id}/config", json={"config": {"more": "y" * 40_000}})
    assert too_big.status_code == 422, too_big.text
    detail = too_big.json()["detail"]
    assert detail["code"] == "invalid_input" and detail["message"].startswith("config: ")
    assert "larger than" in detail["message"]

    # Each half is within the limit, the merge is not: refused, nothing sent, no version taken.
    # (Depth cannot grow in a merge: a result is never deeper than its config or its patch.)
    assert client.get(f"/bots/{bot_id}/commands").json()["items"] == []
    command = change(client, "PATCH", bot_id, {"blob": None, "more": "y" * 40_000})
    assert command["config"] == {"more": "y" * 40_000} and command["config_version"] == 2
    versions = [c["config_version"] for c in client.get(f"/bots/{bot_id}/commands").json()["items"]]
    assert versions == [2], "a refused change makes no command and takes no version"
    stop(client, bot_id)


def test_idempotency_key_on_patch_and_put(manager: Manager) -> None:
    _, client = manager.new_user()
    bot_id = start_active(client, {"n": 0})
    for method, key in (("PATCH", "p1"), ("PUT", "u1")):
        headers = {"Idempotency-Key": key}
        first = change(client, method, bot_id, {"n": key}, headers=headers)
        again = client.request(
            method, f"/bots/{bot_id}/config", json={"config": {"n": key}}, headers=headers
        )
        assert again.status_code == 202 and again.json() == first
        assert again.headers.get("Idempotent-Replayed") == "true"
        other = client.request(
            method, f"/bots/{bot_id}/config", json={"config": {"n": "other"}}, headers=headers
        )
        assert other.status_code == 422
        assert other.json()["detail"]["code"] == "idempotency_mismatch"
    # The same key on the other method is another request, not a replay.
    crossed = client.put(
        f"/bots/{bot_id}/config", json={"config": {"n": "p1"}}, headers={"Idempotency-Key": "p1"}
    )
    assert crossed.status_code == 422
    assert crossed.json()["detail"]["code"] == "idempotency_mismatch"
    assert len(client.get(f"/bots/{bot_id}/commands").json()["items"]) == 2, "one command per key"
    stop(client, bot_id)

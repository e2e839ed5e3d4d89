"""Issue 30, bulk actions and bot edits, against one real manager: `POST /bots/actions` stops,
reconfigures (a merge), commands, relaunches and deletes the bots a selector names, in one call
answered 202 with an operation whose progress and per-bot results are read back; a bot that
refuses is a failed result, not a failed operation; another user's bots are never selected;
an `Idempotency-Key` gives the same operation. `PATCH /bots/{id}` edits what the state allows
(409 `not_editable` otherwise) and audits each edit. `GET /bots?name=` searches names, `?sort=`
orders by name, status or heartbeat, keyset pages still. The CLI's `bots stop --label` past a
few bots, `bots reconfigure`, `bots edit` and `operations …` drive the same.

Most bots here are scheduled a long way ahead: rows, never processes (stopping one ends it at
once); the reconfigure and command tests run two real demo bots."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from botfleet.cli.main import app
from tests.support import Manager, wait_for_command, wait_for_status, wait_until

LATER = "2999-01-01T00:00:00Z"


def scheduled(client: httpx.Client, **body: Any) -> dict[str, Any]:
    answer = client.post("/bots", json={"bot": "demo", "config": {}, "start_at": LATER, **body})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def act(client: httpx.Client, body: dict[str, Any], **headers: str) -> httpx.Response:
    return client.post("/bots/actions", json=body, headers=headers)


def finished(client: httpx.Client, operation: dict[str, Any]) -> dict[str, Any]:
    """The operation once the worker is through with it."""
    return dict(
        wait_until(
            lambda: (
                (o := client.get(f"/operations/{operation['id']}").json())["status"] != "running"
                and o
            ),
            timeout=30,
            what=f"operation {operation['id']} to finish",
        )
    )


def results(client: httpx.Client, operation_id: str, **params: Any) -> list[dict[str, Any]]:
    answer = client.get(f"/operations/{operation_id}/results", params={"limit": 1000, **params})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


def test_a_bulk_stop_by_label_ends_them_all_in_one_call(manager: Manager) -> None:
    _, client = manager.new_user(max_bots=50)
    _, other = manager.new_user()
    team = f"t{uuid.uuid4().hex[:6]}"
    ours = [scheduled(client, labels={"team": team})["id"] for _ in range(30)]
    elsewhere = scheduled(client, labels={"team": "elsewhere"})["id"]
    theirs = scheduled(other, labels={"team": team})["id"]  # the same label, another user

    body = {"action": "stop", "selector": {"labels": {"team": team}}}
    answer = act(client, body, **{"Idempotency-Key": f"stop-{team}"})
    assert answer.status_code == 202, answer.text
    started = answer.json()
    assert started["action"] == "stop" and started["total"] == 30
    assert started["status"] in ("running", "done") and set(started) == {
        "id", "action", "status", "total", "done", "failed", "created_at", "finished_at",
    }  # fmt: skip
    again = act(client, body, **{"Idempotency-Key": f"stop-{team}"})
    assert again.status_code == 202 and again.json()["id"] == started["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"

    operation = finished(client, started)
    assert (operation["status"], operation["done"], operation["failed"]) == ("done", 30, 0)
    assert operation["finished_at"] is not None
    listed = client.get("/bots", params={"label": f"team:{team}", "limit": 1000}).json()
    assert {b["id"]: b["status"] for b in listed["items"]} == dict.fromkeys(ours, "completed")
    assert client.get(f"/bots/{elsewhere}").json()["status"] == "requested"
    assert other.get(f"/bots/{theirs}").json()["status"] == "requested"
    # Each stop is the single-bot route's: its transition is the user's key's.
    moves = client.get(f"/bots/{ours[0]}/transitions").json()["items"]
    assert moves[-1]["reason"] == "cancelled" and moves[-1]["actor"].startswith("key:")

    # The results, a keyset page at a time; every one ok.
    first = client.get(f"/operations/{started['id']}/results", params={"limit": 20}).json()
    rest = client.get(
        f"/operations/{started['id']}/results", params={"limit": 20, "cursor": first["next_cursor"]}
    ).json()
    assert rest["next_cursor"] is None
    shown = first["items"] + rest["items"]
    assert sorted(r["bot_id"] for r in shown) == sorted(ours)
    assert all(r["ok"] and r["result"] == {"status": "completed"} for r in shown)
    assert client.get("/operations").json()["items"][0]["id"] == started["id"]
    # Another user sees none of it.
    assert other.get(f"/operations/{started['id']}").status_code == 404
    assert other.get(f"/operations/{started['id']}/results").status_code == 404
    assert other.post(f"/operations/{started['id']}/cancel").status_code == 404
    # Cancelling a finished operation answers it as it is.
    cancelled = client.post(f"/operations/{started['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "done"
    other.post(f"/bots/{theirs}/stop")
    client.post(f"/bots/{elsewhere}/stop")


def test_the_selector_picks_only_the_callers_bots(manager: Manager) -> None:
    _, client = manager.new_user()
    _, other = manager.new_user()
    mine, ended = scheduled(client)["id"], scheduled(client)["id"]
    assert client.post(f"/bots/{ended}/stop").status_code == 202
    theirs = scheduled(other)["id"]

    empty = act(client, {"action": "stop", "selector": {}})
    assert empty.status_code == 422 and empty.json()["detail"]["code"] == "empty_selector"
    lists = act(client, {"action": "stop", "selector": {"ids": [], "labels": {}}})
    assert lists.status_code == 422 and lists.json()["detail"]["code"] == "empty_selector"
    wrong = act(client, {"action": "stop", "selector": {"ids": [mine]}, "config": {"n": 1}})
    assert wrong.status_code == 422
    none = act(client, {"action": "stop", "selector": {"labels": {"no": "such"}}}).json()
    assert (none["status"], none["total"], none["done"]) == ("done", 0, 0)

    # Another user's id, an unknown one: failed results `bot_not_found`, nothing done to them;
    # one of mine that fails the status filter is simply not selected.
    unknown = str(uuid.uuid4())
    selector = {"ids": [mine, theirs, unknown, ended, mine], "status": ["requested"]}
    operation = finished(client, act(client, {"action": "stop", "selector": selector}).json())
    assert (operation["total"], operation["done"], operation["failed"]) == (3, 1, 2)
    failed = results(client, operation["id"], ok="false")
    assert {r["bot_id"] for r in failed} == {theirs, unknown}
    assert {r["error"]["code"] for r in failed} == {"bot_not_found"}
    assert {r["error"]["status"] for r in failed} == {404}
    assert [r["bot_id"] for r in results(client, operation["id"], ok="true")] == [mine]
    assert other.get(f"/bots/{theirs}").json()["status"] == "requested"
    assert client.get(f"/bots/{mine}").json()["status"] == "completed"

    # A bulk delete: the ended bots go; a live one is refused alone (409 bot_live).
    live = scheduled(client)["id"]
    deleting = {"action": "delete", "selector": {"ids": [mine, ended, live]}}
    operation = finished(client, act(client, deleting).json())
    assert (operation["done"], operation["failed"]) == (2, 1)
    (refused,) = results(client, operation["id"], ok="false")
    assert refused["bot_id"] == live and refused["error"]["code"] == "bot_live"
    assert client.get(f"/bots/{mine}").status_code == 404
    other.post(f"/bots/{theirs}/stop")
    client.post(f"/bots/{live}/stop")


def test_a_bulk_reconfigure_merges_and_a_bot_that_cannot_take_it_fails_alone(
    manager: Manager,
) -> None:
    _, client = manager.new_user()
    group = f"g{uuid.uuid4().hex[:6]}"
    running = [
        client.post(
            "/bots",
            json={"bot": "demo", "config": {"lang": "en", "n": 1}, "labels": {"g": group}},
        ).json()["id"]
        for _ in range(2)
    ]
    waiting = scheduled(client, labels={"g": group}, config={"lang": "en"})["id"]
    for bot_id in running:
        wait_for_status(client, bot_id, {"active"})

    merge = {"action": "reconfigure", "selector": {"labels": {"g": group}}, "config": {"n": 2}}
    operation = finished(client, act(client, merge).json())
    assert (operation["total"], operation["done"], operation["failed"]) == (3, 2, 1)
    by_bot = {r["bot_id"]: r for r in results(client, operation["id"])}
    assert by_bot[waiting]["ok"] is False
    assert by_bot[waiting]["error"]["code"] == "illegal_transition"
    assert by_bot[waiting]["error"]["status"] == 409
    for bot_id in running:
        command_id = by_bot[bot_id]["result"]["command_id"]
        assert wait_for_command(client, bot_id, command_id, {"acked", "failed"})["status"] == (
            "acked"
        )
        assert client.get(f"/bots/{bot_id}").json()["config"] == {"lang": "en", "n": 2}

    # A custom command to the running ones, by status and label together.
    echo = {
        "action": "command",
        "selector": {"labels": {"g": group}, "status": ["active"]},
        "command": {"action": "echo", "payload": {"say": "hi"}},
    }
    operation = finished(client, act(client, echo).json())
    assert (operation["total"], operation["done"]) == (2, 2)
    for row in results(client, operation["id"]):
        command = wait_for_command(client, row["bot_id"], row["result"]["command_id"], {"acked"})
        assert command["result"] == {"say": "hi"}

    # Stop them all, then relaunch the ended ones in bulk: new bots, `relaunch_of` the old.
    stopped = finished(
        client, act(client, {"action": "stop", "selector": {"labels": {"g": group}}}).json()
    )
    assert stopped["done"] == 3
    for bot_id in running:
        wait_for_status(client, bot_id, {"completed"})
    relaunch = {"action": "relaunch", "selector": {"ids": [running[0]]}}
    operation = finished(client, act(client, relaunch).json())
    (row,) = results(client, operation["id"])
    new = client.get(f"/bots/{row['result']['bot_id']}").json()
    assert new["relaunch_of"] == running[0] and new["config"] == {"lang": "en", "n": 2}
    client.post(f"/bots/{new['id']}/stop")


def test_an_edit_changes_what_the_state_allows_and_is_audited(manager: Manager) -> None:
    _, client = manager.new_user()
    _, other = manager.new_user()
    bot = scheduled(client, name="standup", labels={"team": "a", "old": "x"})
    edit = client.patch(
        f"/bots/{bot['id']}",
        json={
            "name": "stand-up",
            "labels": {"old": None, "room": "b"},
            "start_at": "2998-06-01T09:00:00+02:00",
            "max_duration_s": 600,
            "restart": {"max_retries": 2},
            "priority": 5,
        },
    )
    assert edit.status_code == 200, edit.text
    edited = edit.json()
    assert edited["name"] == "stand-up" and edited["labels"] == {"team": "a", "room": "b"}
    assert edited["start_at"].startswith("2998-06-01T07:00:00")
    assert edited["max_duration_s"] == 600 and edited["restart"]["max_retries"] == 2
    assert edited["restart"]["backoff_s"] == 5.0  # the fields not given stay
    # Labels are searchable as edited.
    found = client.get("/bots", params={"label": "room:b"}).json()["items"]
    assert [b["id"] for b in found] == [bot["id"]]
    assert client.get("/bots", params={"label": "old:x"}).json()["items"] == []

    # Audited: who changed what, from what to what; an edit that changes nothing is no edit.
    assert client.patch(f"/bots/{bot['id']}", json={"name": "stand-up"}).status_code == 200
    (audit,) = client.get(f"/bots/{bot['id']}/edits").json()["items"]
    assert audit["actor"].startswith("key:") and audit["bot_id"] == bot["id"]
    assert audit["changes"]["name"] == {"from": "standup", "to": "stand-up"}
    assert audit["changes"]["priority"] == {"from": 0, "to": 5}
    assert set(audit["changes"]) == {
        "name", "labels", "start_at", "max_duration_s", "restart", "priority",
    }  # fmt: skip

    # Bad values: 422 as POST /bots; another user's bot: 404.
    for wrong in ({"max_duration_s": 0}, {"start_at": "2999-01-01T00:00:00"}, {"state": "x"}):
        assert client.patch(f"/bots/{bot['id']}", json=wrong).status_code == 422, wrong
    assert other.patch(f"/bots/{bot['id']}", json={"name": "mine"}).status_code == 404
    assert other.get(f"/bots/{bot['id']}/edits").status_code == 404

    # Moved to now, the bot launches; once it has, its start time is fixed (409).
    assert client.patch(f"/bots/{bot['id']}", json={"start_at": None}).status_code == 200
    wait_for_status(client, bot["id"], {"active"})
    late = client.patch(f"/bots/{bot['id']}", json={"start_at": LATER})
    assert late.status_code == 409
    assert late.json()["detail"]["code"] == "not_editable"
    assert late.json()["detail"]["field"] == "start_at"
    assert client.patch(f"/bots/{bot['id']}", json={"max_duration_s": 900}).status_code == 200

    # Ended: its name and labels still change, nothing else.
    client.post(f"/bots/{bot['id']}/stop")
    wait_for_status(client, bot["id"], {"completed"})
    assert client.patch(f"/bots/{bot['id']}", json={"labels": {"done": "yes"}}).status_code == 200
    refused = client.patch(f"/bots/{bot['id']}", json={"priority": 1})
    assert refused.status_code == 409 and refused.json()["detail"]["field"] == "priority"


def test_the_list_searches_names_and_sorts_a_page_at_a_time(manager: Manager) -> None:
    _, client = manager.new_user()
    names = ["bravo1", "alpha2", "alpha1", "Charlie", "alpha_x", "alphaZ"]
    made = {name: scheduled(client, name=name)["id"] for name in names}
    nameless = scheduled(client)["id"]

    found = client.get("/bots", params={"name": "ALPHA"}).json()["items"]
    assert sorted(b["name"] for b in found) == ["alpha1", "alpha2", "alphaZ", "alpha_x"]
    literal = client.get("/bots", params={"name": "alpha_"}).json()["items"]
    assert [b["name"] for b in literal] == ["alpha_x"]  # `_` is no wildcard

    def every(sort: str) -> list[dict[str, Any]]:
        """Each bot once, following two-bot pages."""
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"sort": sort, "limit": 2, **({"cursor": cursor} if cursor else {})}
            page = client.get("/bots", params=params).json()
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return seen

    by_name = [b["id"] for b in every("name")]
    order = ["alpha1", "alpha2", "alpha_x", "alphaZ", "bravo1", "Charlie"]
    assert by_name == [nameless] + [made[n] for n in order]  # no name sorts first
    assert [b["id"] for b in every("-name")] == by_name[::-1]
    client.post(f"/bots/{made['Charlie']}/stop")
    by_status = [b["status"] for b in every("status")]
    assert by_status == ["requested"] * 6 + ["completed"]
    assert len(every("-heartbeat")) == len(every("heartbeat")) == 7
    page = client.get("/bots", params={"sort": "name", "limit": 2}).json()
    other_sort = client.get("/bots", params={"sort": "status", "cursor": page["next_cursor"]})
    assert other_sort.status_code == 422
    assert other_sort.json()["detail"]["code"] == "invalid_cursor"
    assert client.get("/bots", params={"sort": "size"}).status_code == 422
    for bot_id in [*made.values(), nameless]:
        client.post(f"/bots/{bot_id}/stop")


def test_the_cli_acts_on_many_bots_as_one_operation(manager: Manager, tmp_path: Path) -> None:
    user, client = manager.new_user()
    env = {
        "BOTFLEET_URL": manager.url,
        "BOTFLEET_KEY": user["api_key"],
        "BOTFLEET_ADMIN_TOKEN": None,
        "BOTFLEET_CONFIG": str(tmp_path / "absent.toml"),
        "COLUMNS": "200",
    }

    def cli(*args: str) -> Any:
        return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)

    team = f"t{uuid.uuid4().hex[:6]}"
    ids = [scheduled(client, labels={"team": team})["id"] for _ in range(8)]
    stopped = cli("bots", "stop", "--label", f"team:{team}", "--yes")
    assert stopped.exit_code == 0, stopped.output
    assert sorted(line.split()[0] for line in stopped.stdout.splitlines()) == sorted(ids)
    assert all(line.split()[1] == "completed" for line in stopped.stdout.splitlines())
    assert stopped.stderr.strip() == "stopped 8 of 8 bots"
    (operation,) = client.get("/operations").json()["items"]  # one call, not eight
    assert (operation["action"], operation["done"]) == ("stop", 8)

    shown = cli("operations", "show", operation["id"], "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["status"] == "done"
    listed = cli("operations", "results", operation["id"])
    assert listed.exit_code == 0 and len(listed.stdout.splitlines()) == 8

    # `--no-wait`: the operation's id at once; rm in bulk deletes the ended ones.
    removed = cli("bots", "rm", "--label", f"team:{team}", "--yes", "--no-wait")
    assert removed.exit_code == 0, removed.output
    removing = removed.stdout.strip()
    assert client.get(f"/operations/{removing}").json()["action"] == "delete"
    wait_until(
        lambda: client.get("/bots", params={"label": f"team:{team}"}).json()["items"] == [],
        what="the bulk delete",
    )

    # `bots edit`; `bots reconfigure` over selected bots that are not running: each refused.
    bot = scheduled(client, labels={"team": team})["id"]
    edited = cli("bots", "edit", bot[-8:], "--name", "renamed", "--label", "tier:web", "--json")
    assert edited.exit_code == 0, edited.output
    assert json.loads(edited.stdout)["labels"] == {"team": team, "tier": "web"}
    refused = cli("bots", "reconfigure", bot, "--set", "n=3")
    assert refused.exit_code == 4, refused.output  # 409 illegal_transition, as `bots config`
    assert "illegal_transition" in refused.stderr
    assert refused.stderr.rstrip().endswith("reconfigured 0 of 1 bot, 1 failed")
    client.post(f"/bots/{bot}/stop")

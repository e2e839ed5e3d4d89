"""Schedules through the API, with one manager: a schedule fires on its own (a 6-field cron
every 5 s, the shortest allowed), starts a bot that carries `schedule_id` and is stopped by the
scheduler after `duration_s`; `overlap: skip` records a skipped firing; a paused schedule does
not fire (shown once the loop has run past a time it would have fired at); PATCH recomputes the
next fire time; a deleted schedule keeps its bots; refusals have stable codes; the dashboard
lists schedules in their zone and pauses and resumes them, and so does the CLI."""

from __future__ import annotations

import json
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from botfleet.cli import output
from botfleet.cli.main import app
from tests.support import Manager, wait_for_status, wait_until
from tests.ui_browser import ui_client

EVERY_5_S = "*/5 * * * * *"
DEMO = {"bot": "demo", "config": {}}


def created(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/schedules", json={"timezone": "UTC", "template": DEMO, **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


def when(client: httpx.Client, schedule_id: str, predicate: Any, *, what: str) -> dict[str, Any]:
    """The schedule once `predicate` holds for it."""

    def current() -> dict[str, Any] | None:
        found = client.get(f"/schedules/{schedule_id}").json()
        return found if predicate(found) else None

    return dict(wait_until(current, timeout=40, interval=0.1, what=what))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_schedule_fires_stops_skips_pauses_and_is_deleted(manager: Manager) -> None:
    _, client = manager.new_user()
    timed = created(client, name="timed", cron=EVERY_5_S, duration_s=2, overlap="allow",
                    timezone="Europe/Berlin")  # fmt: skip
    held = created(client, name="held", cron=EVERY_5_S, overlap="skip")
    assert at(timed["next_fire_local"]).utcoffset() in (timedelta(hours=1), timedelta(hours=2))

    first = when(
        client, timed["id"], lambda s: s["last_outcome"] == "started", what="the first firing"
    )
    paused = client.patch(f"/schedules/{timed['id']}", json={"paused": True}).json()
    assert paused["paused"] and paused["next_fire_at"] is None

    # The bot it started: schedule_id, and stopped by the scheduler once its duration is over.
    bot_id = first["last_bot_id"]
    bot = client.get(f"/bots/{bot_id}").json()
    assert bot["schedule_id"] == timed["id"]
    wait_for_status(client, bot_id, {"completed", "failed"})
    rows = client.get(f"/bots/{bot_id}/transitions").json()["items"]
    [stop] = [r for r in rows if r["actor"] == "scheduler"]
    assert stop["reason"] in ("schedule_duration", "cancelled")  # cancelled: stopped unlaunched
    assert at(stop["at"]) >= at(first["last_fired_at"]) + timedelta(seconds=2)

    # Overlap skip: the held schedule's bot is still live at its next fire time.
    started = when(
        client, held["id"], lambda s: s["last_outcome"] == "started", what="held's first firing"
    )
    skipped = when(
        client, held["id"], lambda s: s["last_outcome"] == "skipped", what="a skipped firing"
    )
    assert (skipped["last_reason"], skipped["last_bot_id"]) == ("overlap", None)
    assert at(skipped["last_fired_at"]) > at(started["last_fired_at"])
    [only] = client.get(f"/schedules/{held['id']}/bots").json()["items"]
    assert only["id"] == started["last_bot_id"] and only["status"] not in ("completed", "failed")
    firings = client.get(f"/schedules/{held['id']}/firings").json()["items"]
    assert [f["outcome"] for f in firings][:2] == ["skipped", "started"]

    # Paused: the timed schedule, same cron, did not fire at the time held was skipped, once
    # the loop has run twice after it.
    manager.loop_runs("schedules", 2, after=at(skipped["last_fired_at"]) + timedelta(seconds=0.1))
    now_timed = client.get(f"/schedules/{timed['id']}").json()
    assert now_timed["last_fired_at"] == first["last_fired_at"]
    assert len(client.get(f"/schedules/{timed['id']}/firings").json()["items"]) == 1
    resumed = client.patch(f"/schedules/{timed['id']}", json={"paused": False}).json()
    assert at(resumed["next_fire_at"]) > datetime.now(UTC) - timedelta(seconds=1)

    # Deleted: the schedule is gone, its bot stays with its schedule_id.
    assert client.delete(f"/schedules/{timed['id']}").status_code == 204
    gone = client.get(f"/schedules/{timed['id']}")
    assert (gone.status_code, gone.json()["detail"]["code"]) == (404, "schedule_not_found")
    assert client.get(f"/bots/{bot_id}").json()["schedule_id"] == timed["id"]
    client.patch(f"/schedules/{held['id']}", json={"paused": True})
    client.post(f"/bots/{started['last_bot_id']}/stop")


def test_patch_and_refusals(manager: Manager) -> None:
    _, client = manager.new_user()
    daily = created(client, name="daily", cron="0 9 * * 1-5", timezone="Europe/Berlin",
                    window_end="17:00", duration_s=3600)  # fmt: skip
    assert at(daily["next_fire_local"]).strftime("%H:%M") == "09:00"
    assert daily["template"] == DEMO and daily["last_outcome"] is None
    changed = client.patch(
        f"/schedules/{daily['id']}",
        json={"timezone": "America/New_York", "name": "ny", "duration_s": None},
    ).json()
    assert changed["name"] == "ny" and changed["duration_s"] is None
    assert changed["window_end"] == "17:00"
    local = at(changed["next_fire_local"])
    assert local.strftime("%H:%M") == "09:00" and local.utcoffset() in (
        timedelta(hours=-5),
        timedelta(hours=-4),
    )

    def refused(method: str, path: str, body: dict[str, Any]) -> str:
        response = client.request(method, path, json=body)
        assert response.status_code == 422, response.text
        return str(response.json()["detail"]["code"])

    base = {"name": "x", "cron": "0 9 * * *", "timezone": "UTC", "template": DEMO}
    assert refused("POST", "/schedules", {**base, "cron": "0 9 * *"}) == "invalid_cron"
    assert refused("POST", "/schedules", {**base, "cron": "*/2 * * * * *"}) == "cron_too_frequent"
    assert refused("POST", "/schedules", {**base, "timezone": "Mars/Base"}) == "unknown_timezone"
    assert refused("POST", "/schedules", {**base, "template": {"bot": "nope", "config": {}}}) == (
        "unknown_bot"
    )
    start_at = {**DEMO, "start_at": "2030-01-01T00:00:00Z"}
    assert refused("POST", "/schedules", {**base, "template": start_at}) == "invalid_input"
    assert refused("POST", "/schedules", {**base, "window_end": "25:00"}) == "invalid_input"
    path = f"/schedules/{daily['id']}"
    assert refused("PATCH", path, {"cron": "61 * * * *"}) == "invalid_cron"
    assert refused("PATCH", path, {"name": None}) == "invalid_input"
    assert refused("PATCH", path, {"template": {"bot": "nope", "config": {}}}) == "unknown_bot"

    created(client, name="second", cron="@daily")
    page = client.get("/schedules", params={"limit": 1}).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = client.get("/schedules", params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert rest["items"][0]["id"] == daily["id"]
    bad = client.get("/schedules", params={"cursor": "nope"})
    assert bad.json()["detail"]["code"] == "invalid_cursor"

    _, stranger = manager.new_user()
    assert stranger.get(path).status_code == 404
    assert stranger.patch(path, json={"paused": True}).status_code == 404
    assert stranger.delete(path).status_code == 404


def test_the_dashboard_lists_pauses_and_resumes(manager: Manager) -> None:
    user, api = manager.new_user()
    office = created(api, name="office <hours>", cron="0 9 * * 1-5", timezone="Europe/Berlin",
                     window_end="17:00")  # fmt: skip
    client, csrf = ui_client(manager.url, user["api_key"])
    with closing(client), closing(api):
        page = client.get("/ui/schedules").text
        assert "office &lt;hours&gt;" in page and "Europe/Berlin" in page
        assert at(office["next_fire_local"]).strftime("%Y-%m-%d %H:%M:%S") in page
        assert 'href="/ui/schedules"' in page  # the nav link
        for action, paused in (("pause", True), ("resume", False)):
            answer = client.post(f"/ui/schedules/{office['id']}/{action}",
                                 data={"csrf_token": csrf})  # fmt: skip
            assert answer.status_code == 303, answer.text
            assert api.get(f"/schedules/{office['id']}").json()["paused"] is paused
        forged = client.post(f"/ui/schedules/{office['id']}/pause", data={"csrf_token": "x"})
        assert forged.status_code == 403
        assert api.get(f"/schedules/{office['id']}").json()["paused"] is False


def test_the_cli_creates_lists_pauses_and_removes(
    manager: Manager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, api = manager.new_user()
    monkeypatch.setattr(output, "console", Console(highlight=False, width=200))
    env = {"BOTFLEET_URL": manager.url, "BOTFLEET_KEY": user["api_key"],
           "BOTFLEET_CONFIG": str(tmp_path / "absent.toml")}  # fmt: skip

    def cli(*args: str) -> str:
        result = CliRunner().invoke(app, ["schedules", *args], env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    made = json.loads(cli("create", "nightly", "--cron", "0 22 * * *", "--tz", "Asia/Tokyo",
                          "--bot", "demo", "--window-end", "06:00", "--json"))  # fmt: skip
    assert (made["template"], made["window_end"]) == (DEMO, "06:00")
    short = made["id"][-8:]
    assert short in cli("ls") and "Asia/Tokyo" in cli("ls")
    assert "paused" in cli("pause", short)
    assert api.get(f"/schedules/{made['id']}").json()["paused"] is True
    assert "resumed" in cli("resume", short)
    assert "template" in cli("show", short)
    assert json.loads(cli("bots", short, "--json"))["items"] == []
    assert "deleted" in cli("rm", short)
    assert api.get(f"/schedules/{made['id']}").status_code == 404

"""Issue 30, bulk actions and bot edits, the pure parts: what a bulk request and a selector
accept, what an edit may change in each state, how labels and restart policies merge, the
fleet list's sort cursors, and the worker's turns between users."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.dialects import sqlite

from botfleet.manager.background.operations import OperationsWorker
from botfleet.manager.core.errors import Conflict, Invalid
from botfleet.manager.core.statuses import BotStatus
from botfleet.manager.schemas.operations import BotEditBody, BulkActionCreate, Selector
from botfleet.manager.services import bot_listing
from botfleet.manager.services.bot_edits import merged_labels, merged_restart, refuse_fields


def bulk(**body: Any) -> BulkActionCreate:
    import json

    return BulkActionCreate.model_validate_json(json.dumps(body))


def test_a_bulk_request_carries_what_its_action_needs_and_nothing_else() -> None:
    assert bulk(action="stop", selector={"labels": {"team": "a"}}).config is None
    merged = bulk(action="reconfigure", selector={"status": ["active"]}, config={"n": 2})
    assert merged.config == {"n": 2}
    sent = bulk(action="command", selector={"ids": ["x"]}, command={"action": "echo"})
    assert sent.command is not None and sent.command.payload == {}
    for wrong in (
        {"action": "reconfigure", "selector": {"ids": ["x"]}},  # no config
        {"action": "stop", "selector": {"ids": ["x"]}, "config": {}},  # config on a stop
        {"action": "command", "selector": {"ids": ["x"]}},  # no command
        {"action": "command", "selector": {"ids": ["x"]}, "command": {"action": "leave"}},
        {"action": "explode", "selector": {"ids": ["x"]}},
        {"action": "stop", "selector": {"status": ["sleeping"]}},
        {"action": "stop", "selector": {"ids": ["x"] * 1001}},
        {"action": "stop", "selector": {"labels": {f"k{i}": "v" for i in range(21)}}},
        {"action": "stop", "selector": {"names": ["x"]}},  # unknown field
    ):
        with pytest.raises(ValidationError):
            bulk(**wrong)


def test_an_empty_selector_is_one_that_names_nothing() -> None:
    assert Selector().is_empty()
    assert Selector(ids=[], labels={}, status=[]).is_empty()
    assert not Selector(status=[BotStatus.ACTIVE]).is_empty()
    assert not Selector(labels={"team": "a"}).is_empty()


def test_what_each_state_lets_an_edit_change() -> None:
    for status in ("queued", "requested", "starting", "active", "stopping", "completed"):
        refuse_fields(status, {"name", "labels"})  # always
    for status in ("queued", "requested"):
        refuse_fields(status, {"start_at", "max_duration_s", "restart", "priority"})
    for status in ("starting", "active", "stopping", "completed", "failed"):
        with pytest.raises(Conflict) as refused:
            refuse_fields(status, {"name", "start_at"})
        assert refused.value.code == "not_editable" and refused.value.extra["field"] == "start_at"
    refuse_fields("active", {"max_duration_s", "restart", "priority"})
    for field in ("max_duration_s", "restart", "priority"):
        with pytest.raises(Conflict) as refused:
            refuse_fields("failed", {field})
        assert refused.value.extra == {"field": field, "status": "failed"}


def test_labels_merge_key_by_key_and_null_removes_one() -> None:
    assert merged_labels({"a": "1", "b": "2"}, {"b": None, "c": "3"}) == {"a": "1", "c": "3"}
    assert merged_labels({"a": "1"}, {"gone": None}) == {"a": "1"}
    with pytest.raises(Invalid):
        merged_labels({f"k{i}": "v" for i in range(32)}, {"one-more": "v"})


def test_a_restart_edit_replaces_the_fields_it_gives() -> None:
    bot = SimpleNamespace(restart_max_retries=3, restart_backoff_s=2.0, restart_on=["crash"])

    def edit(restart: Any) -> tuple[int, float, list[str] | None]:
        body = BotEditBody.model_validate_json('{"restart": ' + restart + "}")
        return merged_restart(bot, body)  # type: ignore[arg-type]

    assert edit('{"max_retries": 5}') == (5, 2.0, ["crash"])
    assert edit('{"on": null}') == (3, 2.0, None)  # the default triggers again
    assert edit('{"backoff_s": 1, "on": ["start_failed"]}') == (3, 1.0, ["start_failed"])
    assert edit("null") == (0, 5.0, None)  # no restarts
    with pytest.raises(ValidationError):
        edit('{"max_retries": -1}')


def test_an_edit_is_checked_as_post_bots_checks_it() -> None:
    body = BotEditBody.model_validate_json('{"name": " a ", "labels": {"x": null}}')
    assert body.name == "a" and body.model_fields_set == {"name", "labels"}
    for wrong in (
        '{"max_duration_s": 0}',
        '{"start_at": "2030-01-01T00:00:00"}',  # no zone
        '{"labels": {"bad key": "v"}}',
        '{"priority": "high"}',
        '{"status": "active"}',
        '{"name": ""}',
    ):
        with pytest.raises(ValidationError):
            BotEditBody.model_validate_json(wrong)


def test_a_name_prefix_takes_like_wildcards_literally() -> None:
    where = bot_listing.name_starts_with("A_b%/")
    sql = where.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
    assert "lower(bots.name) LIKE 'a/_b/%//%' ESCAPE '/'" in str(sql)


def test_a_sorted_page_cursor_names_its_sort_and_is_checked() -> None:
    when = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    for sort, key in (("name", "standup"), ("-status", 3), ("heartbeat", when)):
        cursor = bot_listing._encode(sort, key, "0196-bot")
        assert bot_listing._decode(sort, cursor) == (key, "0196-bot")
        other = "-name" if sort != "-name" else "name"
        with pytest.raises(Invalid):
            bot_listing._decode(other, cursor)  # a cursor for another order
    long_name = bot_listing._encode("name", "ü" * bot_listing.NAME_KEY_CHARS, "x" * 36)
    assert len(long_name) <= 200  # what `?cursor=` takes
    for forged in ("", "e30", bot_listing._encode("name", "x" * 99, "b"), "!!!"):
        with pytest.raises(Invalid):
            bot_listing._decode("name", forged)
    with pytest.raises(Invalid):
        bot_listing.check_sort("size")


def test_users_take_turns_and_the_next_tick_starts_after_the_last_served() -> None:
    worker = OperationsWorker(sessions=None, bots=None, launcher=None)  # type: ignore[arg-type]
    running = [("op1", "bob"), ("op2", "alice"), ("op3", "bob"), ("op4", "carol")]
    turns = worker._turns(running)
    assert list(turns) == ["alice", "bob", "carol"]
    assert list(turns["bob"]) == ["op1", "op3"]  # one user's oldest first
    worker._last_user = "bob"
    assert list(worker._turns(running)) == ["carol", "alice", "bob"]

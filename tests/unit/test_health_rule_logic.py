"""Health rules (issue 30, item 5) as pure logic: the shapes POST /bots and kinds accept, what a
rule remembers as reports come, when it is due, and what a firing leaves for the restart
policy. No database, no engine: manager/services/health_rules.py and schemas/health_rules.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from botfleet.manager.core.models import Bot
from botfleet.manager.lifecycle import BotStatus
from botfleet.manager.lifecycle.rules import Outcome, Restart, next_attempt
from botfleet.manager.schemas.api import BotCreate
from botfleet.manager.schemas.health_rules import MAX_RULES
from botfleet.manager.schemas.kinds import KindCreate
from botfleet.manager.services.health_rules import (
    Firing,
    describe,
    field_of,
    first_due,
    holding,
    json_equal,
    observe_report,
    report_holds,
    rules_for_new_bot,
)

T0 = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)
CONNECTED = {"when": {"report": "connected", "equals": False, "for_s": 60}, "then": "restart"}
QUIET = {"when": {"no_report_for_s": 30}, "then": "stop"}
DAILY = {"when": {"every_s": 86_400}, "then": "restart"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# ---- shapes ---------------------------------------------------------------------------------


def test_the_three_conditions_are_accepted_and_kept_as_given() -> None:
    body = BotCreate(bot="demo", config={}, health=[CONNECTED, QUIET, DAILY])
    assert rules_for_new_bot(body.health, None) == [CONNECTED, QUIET, DAILY]
    fractional = {"when": {"report": "a.b", "equals": None, "for_s": 1.5}, "then": "stop"}
    body = BotCreate(bot="demo", config={}, health=[fractional])
    assert rules_for_new_bot(body.health, None) == [fractional]


BAD_RULES: list[tuple[Any, str]] = [
    ({"when": {"every_s": 0}, "then": "restart"}, "greater than or equal to 1"),
    ({"when": {"every_s": 31 * 86_400}, "then": "restart"}, "less than or equal"),
    ({"when": {"every_s": True}, "then": "restart"}, "valid number"),
    ({"when": {"every_s": "60"}, "then": "restart"}, "valid number"),
    ({"when": {"no_report_for_s": 0.5}, "then": "stop"}, "greater than or equal to 1"),
    ({"when": {"report": "x", "for_s": 5}, "then": "stop"}, "equals"),  # equals is required
    ({"when": {"report": "x", "equals": 1}, "then": "stop"}, "for_s"),
    ({"when": {"report": "", "equals": 1, "for_s": 5}, "then": "stop"}, "at least 1"),
    ({"when": {"report": "a..b", "equals": 1, "for_s": 5}, "then": "stop"}, "pattern"),
    ({"when": {"report": "x", "equals": "v" * 2000, "for_s": 5}, "then": "stop"}, "1024 bytes"),
    ({"when": {"every_s": 60, "no_report_for_s": 60}, "then": "stop"}, "exactly one of"),
    ({"when": {}, "then": "stop"}, "exactly one of"),
    ({"when": "every hour", "then": "stop"}, "exactly one of"),
    ({"when": {"every_s": 60, "extra": 1}, "then": "stop"}, "Extra inputs"),
    ({"when": {"every_s": 60}, "then": "reboot"}, "'restart' or 'stop'"),
    ({"when": {"every_s": 60}}, "then"),
]


@pytest.mark.parametrize(("rule", "message"), BAD_RULES)
def test_a_malformed_rule_is_refused_with_its_place(rule: Any, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        BotCreate(bot="demo", config={}, health=[rule])
    first = refused.value.errors()[0]
    assert first["loc"][:2] == ("health", 0), first
    assert message in str(refused.value), str(refused.value)


def test_at_most_ten_rules_and_kinds_take_the_same_shapes() -> None:
    with pytest.raises(ValidationError, match=f"at most {MAX_RULES} items"):
        BotCreate(bot="demo", config={}, health=[DAILY] * (MAX_RULES + 1))
    kind = KindCreate(name="watched", run={"python": "m:C"}, health=[QUIET])
    assert kind.document()["health"] == [QUIET]
    assert KindCreate(name="plain", run={"python": "m:C"}).document()["health"] is None
    with pytest.raises(ValidationError):
        KindCreate(name="bad", run={"python": "m:C"}, health=[{"when": {}, "then": "stop"}])


def test_a_bot_keeps_its_own_rules_else_its_kinds() -> None:
    assert rules_for_new_bot(None, [QUIET]) == [QUIET]
    assert rules_for_new_bot([DAILY], [QUIET]) == [DAILY]
    assert rules_for_new_bot([], [QUIET]) is None  # `[]`: no rules at all
    assert rules_for_new_bot(None, None) is None


def test_rules_are_named_in_words() -> None:
    assert describe(CONNECTED) == "report connected == false for 60 s"
    assert describe(QUIET) == "no report for 30 s"
    assert describe(DAILY) == "every 86400 s"
    odd = {"when": {"report": "s", "equals": {"a": [1, "x"]}, "for_s": 1.5}, "then": "stop"}
    assert describe(odd) == 'report s == {"a":[1,"x"]} for 1.5 s'
    assert Firing(1, QUIET, T0).detail == "health rule 2: no report for 30 s"


# ---- reports --------------------------------------------------------------------------------


def test_json_equality_is_json_s() -> None:
    assert json_equal(1, 1.0) and json_equal({"a": [1, None]}, {"a": [1.0, None]})
    assert not json_equal(True, 1) and not json_equal(0, False) and not json_equal(None, False)
    assert not json_equal("1", 1) and not json_equal([1], [1, 1]) and not json_equal({}, [])
    assert not json_equal({"a": 1}, {"b": 1})


def test_fields_are_found_by_name_or_dotted_path() -> None:
    report = {"connected": False, "telegram": {"state": {"ok": True}}, "a.b": 3}
    assert field_of(report, "connected") is False
    assert field_of(report, "telegram.state.ok") is True
    assert field_of(report, "a.b") == 3  # a field named with a dot wins over the path
    when = {"report": "missing", "equals": None, "for_s": 5}
    assert not report_holds(when, report)  # a missing field is not null
    assert report_holds({"report": "n", "equals": None, "for_s": 5}, {"n": None})
    assert not report_holds({"report": "telegram.x", "equals": 1, "for_s": 5}, report)


def test_a_value_holds_from_its_first_report_until_it_goes() -> None:
    rules = [CONNECTED, QUIET]
    state = observe_report(rules, None, attempt=1, report={"connected": False}, at=at(0))
    assert state == {"attempt": 1, "holding": {"0": at(0).isoformat()}}
    # The same value again: nothing to write, the first time stays.
    assert observe_report(rules, state, attempt=1, report={"connected": False}, at=at(5)) is None
    gone = observe_report(rules, state, attempt=1, report={"connected": True}, at=at(9))
    assert gone == {"attempt": 1, "holding": {}}
    # Nothing held and nothing holds: nothing to write.
    assert observe_report(rules, gone, attempt=1, report={"connected": True}, at=at(10)) is None
    back = observe_report(rules, gone, attempt=1, report={"connected": False}, at=at(12))
    assert back is not None and back["holding"] == {"0": at(12).isoformat()}


def test_a_new_attempt_starts_with_no_memory_and_keeps_the_restart_count() -> None:
    old = {"attempt": 1, "holding": {"0": at(0).isoformat()}, "restarts": 1}
    assert holding(old, 2) == {}
    new = observe_report([CONNECTED], old, attempt=2, report={"connected": False}, at=at(70))
    assert new == {"attempt": 2, "holding": {"0": at(70).isoformat()}, "restarts": 1}
    assert (
        observe_report([CONNECTED], old, attempt=2, report={"connected": True}, at=at(70)) is None
    )


# ---- when a rule is due ---------------------------------------------------------------------


def due(rules: list[dict[str, Any]], **given: Any) -> Firing | None:
    values: dict[str, Any] = {
        "state": None,
        "attempt": 1,
        "active_at": at(0),
        "reported_at": None,
        "now": at(0),
        "heard_since": at(0),
        "settle_s": 2.5,
    }
    values |= given
    return first_due(rules, values.pop("state"), **values)


def test_every_s_is_due_that_long_after_the_attempt_went_active() -> None:
    assert due([DAILY], now=at(86_399)) is None
    firing = due([DAILY], now=at(86_400))
    assert firing is not None and firing.due_at == at(86_400) and firing.then == "restart"
    # It needs no hearing: the clock alone says it.
    assert due([DAILY], now=at(86_400), heard_since=None) is not None
    assert due([DAILY], now=at(86_400), active_at=None) is None


def test_no_report_counts_from_the_last_report_and_only_while_heard() -> None:
    assert due([QUIET], now=at(29)) is None
    assert due([QUIET], now=at(30)) is not None
    assert due([QUIET], now=at(40), reported_at=at(15)) is None  # a report 25 s ago
    assert due([QUIET], now=at(45), reported_at=at(15)) is not None
    # A report of an earlier attempt counts for nothing: silence starts at active_at.
    assert due([QUIET], now=at(20), reported_at=at(-100)) is None
    # Cannot tell is never dead: nothing heard, or heard only since an outage ended.
    assert due([QUIET], now=at(1000), heard_since=None) is None
    assert due([QUIET], now=at(1000), heard_since=at(990)) is None
    assert due([QUIET], now=at(1020), heard_since=at(990)) is not None


def test_a_rule_never_waits_less_than_the_reports_settle_window() -> None:
    fast = {"when": {"no_report_for_s": 1}, "then": "stop"}
    assert due([fast], now=at(2), settle_s=2.5) is None
    assert due([fast], now=at(2.5), settle_s=2.5) is not None
    assert due([fast], now=at(1), settle_s=0.2) is not None


def test_a_report_rule_is_due_for_s_after_its_value_first_held() -> None:
    state = {"attempt": 1, "holding": {"0": at(10).isoformat()}}
    assert due([CONNECTED], state=state, now=at(69)) is None
    firing = due([CONNECTED], state=state, now=at(70))
    assert firing is not None and firing.index == 0 and firing.due_at == at(70)
    assert due([CONNECTED], state=None, now=at(1000)) is None  # the value never held
    # Memory of another attempt, or a value seen before the manager could hear: not yet.
    assert due([CONNECTED], state=state, attempt=2, now=at(1000)) is None
    assert due([CONNECTED], state=state, now=at(1000), heard_since=None) is None
    assert due([CONNECTED], state=state, now=at(80), heard_since=at(30)) is None
    assert due([CONNECTED], state=state, now=at(90), heard_since=at(30)) is not None
    # A value reported while `starting` counts from when the bot went active.
    assert due([CONNECTED], state=state, now=at(70), active_at=at(20)) is None


def test_the_rule_due_first_fires_and_the_first_listed_on_a_tie() -> None:
    quiet_10 = {"when": {"no_report_for_s": 10}, "then": "stop"}
    every_10 = {"when": {"every_s": 10}, "then": "restart"}
    every_5 = {"when": {"every_s": 5}, "then": "restart"}
    firing = due([quiet_10, every_5], now=at(12))
    assert firing is not None and firing.index == 1
    firing = due([quiet_10, every_10], now=at(12))
    assert firing is not None and firing.index == 0 and firing.then == "stop"
    assert due([], now=at(12)) is None and due([{"then": "stop"}], now=at(12)) is None


# ---- what a firing leaves to the restart policy ---------------------------------------------


def test_restarts_made_by_rules_do_not_use_the_policys_retries() -> None:
    crash = Outcome(BotStatus.FAILED, "crashed", 1)
    policy = {"restart_max_retries": 1, "restart_backoff_s": 2.0, "runtime_ref": "r"}
    # Attempt 4 after three daily restarts: the crash still gets its one retry, first backoff.
    after_rules = Bot(status=BotStatus.ACTIVE, attempt=4, health_state={"restarts": 3}, **policy)
    assert next_attempt(after_rules, crash) == Restart(attempt=5, delay_s=2.0)
    # Without the rules' restarts, attempt 4 had used its retries long ago.
    assert next_attempt(Bot(status=BotStatus.ACTIVE, attempt=4, **policy), crash) is None
    once = Bot(status=BotStatus.ACTIVE, attempt=2, health_state={"restarts": 1}, **policy)
    assert next_attempt(once, crash) == Restart(attempt=3, delay_s=2.0)

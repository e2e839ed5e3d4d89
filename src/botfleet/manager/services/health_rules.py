"""Health rules: what they mean, what they remember, and the two moves a firing makes.

A bot's rules (`Bot.health_rules`, its own from POST /bots `health` or its kind version's,
copied at creation; shapes in manager/schemas/health_rules.py) are judged only while it is
`active`:

- `{"report": f, "equals": v, "for_s": N}` holds once the bot's latest report has had `v` at
  `f` for N seconds. Reports are coalesced (manager/hot_path/report_batches.py), so "since
  when" is when the first written report with the value was received, by the database's
  clock; each written report of a bot with rules updates that memory in the write's own
  transaction (`observe_written_report`, the only cost on the report path);
- `{"no_report_for_s": N}` holds once N seconds of the attempt passed without a report;
- `{"every_s": N}` holds N seconds after the attempt went active: a periodic restart.

"Cannot tell" is never "unhealthy": report rules count only time the manager could hear
(`heard_since`: the reconciler's `Listening`, restarted after a database outage, a leadership
change, failing heartbeat writes or a saturated bots' listener), and never less than the
reports' coalescing window (`report_settle_s`): a newer report may still wait in a replica's
memory that long. `every_s` needs no hearing.

What the rules have seen lives in `Bot.health_state`: `{"attempt": n, "holding": {"<rule
index>": "<ISO time>"}, "restarts": k}`. The memory is the attempt's: a new attempt starts
with none. `restarts` counts the restarts the rules made over the bot's life; the restart
policy does not count them against `max_retries` (manager/lifecycle/rules.py `next_attempt`),
so a daily restart never uses up the retries a crash is owed.

A firing is a transition with reason `health_rule` whose detail names the rule, decided under
the bot's row lock and committed before anything is signalled (manager/background/
health_rules.py acts on it): `restart` is `active → starting` (attempt + 1), the old workload
stopped, then the next attempt launched; `stop` is `active → stopping` and a `leave`, as
POST /bots/{id}/stop does.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from botfleet.manager.core.models import Bot, BotAttempt, Command
from botfleet.manager.core.settings import Settings
from botfleet.manager.lifecycle import BotStatus, Source
from botfleet.manager.schemas.health_rules import stored_rules
from botfleet.manager.services import commands as command_records
from botfleet.manager.services.transitions import transition

log = logging.getLogger(__name__)

HEALTH_RULE = "health_rule"
Rules = Sequence[Mapping[str, Any]]
State = Mapping[str, Any]


# ---- what a rule says -------------------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{value:g}"


def describe(rule: Mapping[str, Any]) -> str:
    """The rule in words, as transitions and the dashboard name it:
    `report connected == false for 60 s`, `no report for 300 s`, `every 86400 s`."""
    when = rule["when"]
    if "report" in when:
        equals = json.dumps(when["equals"], separators=(",", ":"))
        return f"report {when['report']} == {equals} for {_seconds(when['for_s'])} s"
    if "no_report_for_s" in when:
        return f"no report for {_seconds(when['no_report_for_s'])} s"
    return f"every {_seconds(when['every_s'])} s"


_MISSING = object()


def field_of(report: Mapping[str, Any] | None, path: str) -> Any:
    """The report's value at `path`: the top-level field of that name, else the dotted path
    into nested objects; `_MISSING` when there is none (a missing field never equals)."""
    if not isinstance(report, Mapping):
        return _MISSING
    if path in report:
        return report[path]
    value: Any = report
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def json_equal(left: Any, right: Any) -> bool:
    """Equality of two JSON values as JSON means it: `1 == 1.0`, but `true` is not `1`."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(json_equal, left, right))
    return type(left) is type(right) and left == right


def report_holds(when: Mapping[str, Any], report: Mapping[str, Any] | None) -> bool:
    """Whether `report` has the value a report condition waits for."""
    value = field_of(report, str(when["report"]))
    return value is not _MISSING and json_equal(value, when["equals"])


# ---- what the rules remember ------------------------------------------------------------------


def holding(state: State | None, attempt: int) -> dict[str, str]:
    """Since when each report rule has held on `attempt` (rule index → ISO time); a memory
    of another attempt is none."""
    if not state or state.get("attempt") != attempt:
        return {}
    return dict(state.get("holding") or {})


def observe_report(
    rules: Rules, state: State | None, *, attempt: int, report: Mapping[str, Any], at: datetime
) -> dict[str, Any] | None:
    """The memory after `report` (received `at`) on `attempt`; None when it is unchanged: a
    rule whose value appears starts holding now, one whose value went stops holding."""
    before = holding(state, attempt)
    after = {}
    for index, rule in enumerate(rules):
        when = rule.get("when") or {}
        if "report" in when and report_holds(when, report):
            after[str(index)] = before.get(str(index)) or at.isoformat()
    if after == before:
        return None
    return {**(state or {}), "attempt": attempt, "holding": after}


def observe_written_report(
    session: Session, bot_id: str, row: Any, data: Mapping[str, Any], at: datetime
) -> None:
    """The report path's hook (manager/hot_path/report_batches.py, in the write's transaction,
    the bot's row locked by its UPDATE): remember which report rules started or stopped
    holding. `row` has the bot's `attempt`, `health_rules` and `health_state`."""
    rules = row.health_rules
    try:
        if not any("report" in (rule.get("when") or {}) for rule in rules):
            return
        memory = observe_report(rules, row.health_state, attempt=row.attempt, report=data, at=at)
    except (AttributeError, KeyError, TypeError, ValueError):  # never block the report itself
        log.exception("bot %s: its stored health rules cannot be read", bot_id)
        return
    if memory is not None:
        session.execute(
            update(Bot)
            .where(Bot.id == bot_id, Bot.attempt == row.attempt)
            .values(health_state=memory)
            .execution_options(synchronize_session=False)
        )


# ---- when a rule fires ------------------------------------------------------------------------


def report_settle_s(settings: Settings) -> float:
    """How late a received report may reach the database: its coalescing interval plus the
    period of the loop that writes coalesced reports (manager/app.py `reports`)."""
    interval = settings.report_min_interval_s
    return interval + min(max(interval / 4, 0.1), 1.0)


@dataclass(frozen=True)
class Firing:
    """A rule that holds: which one, since when it was due, and what it does."""

    index: int
    rule: Mapping[str, Any]
    due_at: datetime

    @property
    def then(self) -> str:
        return str(self.rule["then"])

    @property
    def detail(self) -> str:
        return f"health rule {self.index + 1}: {describe(self.rule)}"


def _parse(moment: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(moment) if moment else None
    except ValueError:
        return None


def _latest(*moments: datetime | None) -> datetime | None:
    known = [m for m in moments if m is not None]
    return max(known) if known else None


def due_at(
    index: int,
    rule: Mapping[str, Any],
    *,
    memory: Mapping[str, str],
    active_at: datetime | None,
    reported_at: datetime | None,
    heard_since: datetime | None,
    settle_s: float,
) -> datetime | None:
    """When the rule holds on the current attempt, as far as is known now; None: not due
    (a report rule whose value is not there, nothing heard yet, a malformed stored rule)."""
    when = rule.get("when") or {}
    if active_at is None:
        return None
    if "every_s" in when:
        return active_at + timedelta(seconds=float(when["every_s"]))
    if heard_since is None:  # the manager could not hear: silence and reports say nothing
        return None
    if "no_report_for_s" in when:
        quiet_from = _latest(active_at, heard_since, reported_at)
        seconds = max(float(when["no_report_for_s"]), settle_s)
    elif "report" in when:
        since = _parse(memory.get(str(index)))
        if since is None:
            return None
        quiet_from = _latest(since, active_at, heard_since)
        seconds = max(float(when["for_s"]), settle_s)
    else:
        return None
    if quiet_from is None or not math.isfinite(seconds):
        return None
    return quiet_from + timedelta(seconds=seconds)


def first_due(
    rules: Rules | None,
    state: State | None,
    *,
    attempt: int,
    active_at: datetime | None,
    reported_at: datetime | None,
    now: datetime,
    heard_since: datetime | None,
    settle_s: float,
) -> Firing | None:
    """The rule to fire now on an active bot: of those due by `now`, the one due first (the
    first listed on a tie); None when none is."""
    if not rules:
        return None
    memory = holding(state, attempt)
    found: Firing | None = None
    for index, rule in enumerate(rules):
        at = due_at(index, rule, memory=memory, active_at=active_at, reported_at=reported_at,
                    heard_since=heard_since, settle_s=settle_s)  # fmt: skip
        if at is not None and at <= now and (found is None or at < found.due_at):
            found = Firing(index, rule, at)
    return found


def health_restarts(state: State | None) -> int:
    """The restarts the rules made over the bot's life."""
    return int((state or {}).get("restarts", 0))


# ---- the moves --------------------------------------------------------------------------------


def restart_for_rule(
    session: Session, bot: Bot, firing: Firing, *, relaunch_after_s: float
) -> str | None:
    """Record a restart on a locked active bot: its attempt ends (`health_rule`), `active →
    starting` begins the next, the old attempt's token dies and the memory restarts. The next
    attempt waits for `relaunch_after_s` (the caller stops the old workload, then launches
    it at once; after a crash of the manager meanwhile the reconciler does). Returns the
    old workload's reference, to be stopped once this is committed."""
    old_ref, ended = bot.runtime_ref, bot.attempt
    record = session.get(BotAttempt, (bot.id, bot.attempt))
    detail = f"{firing.detail}; attempt {ended} restarted as attempt {ended + 1}"
    row = transition(session, bot, BotStatus.STARTING, reason=HEALTH_RULE,
                     source=Source.RECONCILER, detail=detail)  # fmt: skip
    if record is not None and record.ended_at is None:
        record.outcome, record.ended_at = HEALTH_RULE, row.at
    bot.runtime_ref = None
    bot.next_attempt_at = row.at + timedelta(seconds=relaunch_after_s)
    bot.token_hash = None  # the old attempt's token dies with it
    bot.health_state = {"restarts": health_restarts(bot.health_state) + 1}
    return old_ref


def stop_for_rule(session: Session, bot: Bot, firing: Firing, *, settings: Settings) -> Command:
    """Record a stop on a locked active bot, as POST /bots/{id}/stop does (`active → stopping`,
    then a `leave`, published once committed), with reason `health_rule`."""
    transition(session, bot, BotStatus.STOPPING, reason=HEALTH_RULE, source=Source.RECONCILER,
               detail=firing.detail)  # fmt: skip
    return command_records.create_leave(session, bot, ttl_s=settings.command_ttl_s,
                                        retry_s=settings.command_retry_s,
                                        actor=Source.RECONCILER.value)  # fmt: skip


def keep_rules(bot: Bot, own: Sequence[Any] | None, kind: Any) -> None:
    """Copy a new bot's rules onto it (`rules_for_new_bot`; `kind`: its KindDoc or None)."""
    rules = rules_for_new_bot(own, getattr(kind, "health", None))
    if rules:
        bot.health_rules = rules


def rules_for_new_bot(
    own: Sequence[Any] | None, kind_rules: Sequence[Mapping[str, Any]] | None
) -> list[dict[str, Any]] | None:
    """The rules a new bot keeps: its own when it named any (`[]`: none at all), else its
    kind version's; None when it has none (the column stays NULL: the loop reads only bots
    with rules)."""
    chosen = stored_rules(own) if own is not None else stored_rules(list(kind_rules or ()))
    return chosen or None

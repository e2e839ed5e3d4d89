"""Health rules (CONTRACT v3): restart or stop a bot when its own report holds a value for a
while, when it has not reported for a while, or simply every so often (a periodic restart).

A rule is `{"when": <condition>, "then": "restart" | "stop"}`; the condition is one of
`{"report": "<field>", "equals": <JSON>, "for_s": N}`, `{"no_report_for_s": N}` or
`{"every_s": N}`. Asked for at POST /bots (`health`) or on a kind (`POST`/`PUT /admin/kinds`);
what they mean is manager/services/health_rules.py's. A malformed rule is a 422
`invalid_input` naming the rule and the field (`health.0.when.for_s: ...`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    PlainSerializer,
    StringConstraints,
    Tag,
    field_validator,
)

from botfleet.manager.schemas.bounds import Strict, json_size

MAX_RULES = 10
MAX_RULE_S = 30 * 86_400  # as `max_duration_s`: a month
MAX_EQUALS_BYTES = 1024
#: A top-level field of the report, or a dotted path into nested objects (`telegram.connected`).
FIELD_PATH = r"^[^.\s]+(?:\.[^.\s]+)*$"

#: Whole or fractional seconds; a whole number is kept whole (60 stays 60, not 60.0).
Seconds = Annotated[
    float,
    Field(ge=1, le=MAX_RULE_S),
    PlainSerializer(lambda s: int(s) if s.is_integer() else s, return_type=int | float),
]


class ReportHolds(Strict):
    """The bot's latest report has `equals` at `report`, and has had it for `for_s` seconds."""

    report: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=FIELD_PATH)]
    equals: Any = Field(..., description="Any JSON value, compared as JSON (`1` is not `true`).")
    for_s: Seconds

    @field_validator("equals")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        if json_size(value) > MAX_EQUALS_BYTES:
            raise ValueError(f"equals is larger than {MAX_EQUALS_BYTES} bytes")
        return value


class NoReport(Strict):
    """No report for `no_report_for_s` seconds of the current attempt."""

    no_report_for_s: Seconds


class Every(Strict):
    """Every `every_s` seconds of the current attempt being active: a periodic restart."""

    every_s: Seconds


def _condition(value: Any) -> str | None:
    """Which condition a `when` is, by the key that names it (None: not one of them)."""
    if isinstance(value, dict):
        named = [key for key in ("report", "no_report_for_s", "every_s") if key in value]
        return named[0] if len(named) == 1 else None
    if isinstance(value, ReportHolds | NoReport | Every):
        return {ReportHolds: "report", NoReport: "no_report_for_s", Every: "every_s"}[type(value)]
    return None


Condition = Annotated[
    Annotated[ReportHolds, Tag("report")]
    | Annotated[NoReport, Tag("no_report_for_s")]
    | Annotated[Every, Tag("every_s")],
    Discriminator(
        _condition,
        custom_error_type="invalid_health_condition",
        custom_error_message='must be exactly one of {"report", "equals", "for_s"}, '
        '{"no_report_for_s"} or {"every_s"}',
    ),
]


class HealthRule(Strict):
    """One rule: a condition, and what to do once it holds on an `active` bot."""

    when: Condition
    then: Literal["restart", "stop"] = Field(
        ...,
        description="`restart`: a new attempt (the old workload is stopped first); `stop`: the "
        "bot leaves as on POST /bots/{id}/stop. Either is a transition with reason "
        "`health_rule`, its detail naming the rule.",
    )


#: The `health` field of POST /bots and of a kind.
HealthRules = Annotated[
    list[HealthRule],
    Field(
        max_length=MAX_RULES,
        description=f"At most {MAX_RULES} health rules (CONTRACT v3): `when` one of "
        '`{"report": "<field>", "equals": <JSON>, "for_s": N}`, `{"no_report_for_s": N}`, '
        '`{"every_s": N}`; `then` `restart` or `stop`. A bot that names none gets its kind\'s.',
    ),
]


def stored_rules(rules: Sequence[HealthRule | Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Rules as stored and shown (JSON: plain dicts); validated models or stored dicts."""
    return [
        rule.model_dump(mode="json") if isinstance(rule, HealthRule) else dict(rule)
        for rule in rules or ()
    ]

"""What Nomad's evaluations say about a job it could not place.

Registering a job answers before the scheduler has looked at it; the evaluation it created says
later whether the bot could be placed. One that could not be carries `FailedTGAllocs` (per task
group, an AllocMetric) and the ID of a `BlockedEval` that waits for capacity
(https://developer.hashicorp.com/nomad/api-docs/evaluations). Its reasons are worded here as
`nomad job status` words them (command/monitor.go, `formatAllocMetrics`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Evaluation states that will not change any more (nomad/structs/eval.go).
SETTLED = ("complete", "blocked", "failed", "canceled")


def _metric_reasons(metric: Mapping[str, Any]) -> list[str]:
    reasons: list[str] = []
    if not metric.get("NodesEvaluated"):
        reasons.append("no nodes were eligible for evaluation")
    for dc, available in sorted((metric.get("NodesAvailable") or {}).items()):
        if not available:
            reasons.append(f"no nodes are available in datacenter {dc!r}")
    for kind, key in (("class", "ClassFiltered"), ("constraint", "ConstraintFiltered")):
        for name, count in sorted((metric.get(key) or {}).items()):
            reasons.append(f"{kind} {name!r}: {count} nodes excluded by filter")
    if metric.get("NodesExhausted"):
        reasons.append(f"resources exhausted on {metric['NodesExhausted']} nodes")
    for dim, count in sorted((metric.get("DimensionExhausted") or {}).items()):
        reasons.append(f"dimension {dim!r} exhausted on {count} nodes")
    reasons += [f"quota limit hit {dim!r}" for dim in metric.get("QuotaExhausted") or []]
    return reasons


def placement_failure(evaluation: Mapping[str, Any]) -> str | None:
    """Why Nomad could not place the job's allocation, in its own words; None when it could
    (or has not decided yet)."""
    failed = evaluation.get("FailedTGAllocs") or {}
    if not failed:
        return None
    reasons = []
    for group, metric in sorted(failed.items()):
        reasons += [f"{group}: {r}" for r in _metric_reasons(metric or {})] or [
            f"{group}: not placed"
        ]
    blocked = (
        " (Nomad waits for capacity in a blocked evaluation)"
        if evaluation.get("BlockedEval")
        else ""
    )
    return "Nomad could not place the bot: " + "; ".join(reasons) + blocked


def blocked_reason(evaluations: list[Mapping[str, Any]]) -> str | None:
    """The newest placement failure among a job's evaluations."""
    newest = sorted(evaluations, key=lambda e: e.get("CreateIndex", 0), reverse=True)
    for evaluation in newest:
        reason = placement_failure(evaluation)
        if reason:
            return reason
    return None

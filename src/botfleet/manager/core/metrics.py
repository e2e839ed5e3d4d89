"""Prometheus metrics of the manager, defined once at import (the registry is process-wide)."""

from prometheus_client import Counter, Gauge, Histogram

#: Transition reasons worth a label value: those the manager itself decides (lifecycle rules,
#: reconciler, scheduler, launch failures of every backend) and those the shared runtime sends
#: (runtime/runner.py, runtime/bot.py). A bot may report any snake_case reason; each
#: new value would be a new time series forever, so the rest count as `other` (the transition
#: row keeps the real one).
KNOWN_REASONS = frozenset(
    {
        # manager/lifecycle/rules.py, manager/services, manager/reconciler
        "started", "bot_leaving", "exited_before_started", "finished", "left", "crashed",
        "start_failed", "exited", "workload_vanished", "start_timeout", "heartbeat_lost",
        "killed_after_grace", "cancelled", "restarting", "launching", "schedule_missed",
        "secrets_unreadable", "max_duration", "stop_requested", "out_of_memory",
        "admitted", "queue_timeout", "node_lost", "evicted",
        "health_rule",  # manager/services/health_rules.py
        # manager/services/schedule_firing.py: a schedule's stops
        "schedule_duration", "schedule_window", "schedule_replaced",
        # orchestrators: OrchestratorError and LaunchFailed codes
        "launch_failed", "orchestrator_error", "workload_not_found", "backend_unavailable",
        "not_supported", "image_not_found", "network_unavailable", "name_conflict",
        "isolation_unavailable", "job_rejected", "variable_rejected", "bad_id",
        # bot_runtime: exit and leave reasons
        "bot_error", "leave_failed", "leave_requested", "sigterm", "sigint",
    }
)  # fmt: skip
OTHER_REASON = "other"


def reason_label(reason: str) -> str:
    """`reason` when it is one of KNOWN_REASONS, else `other`: bounded label values."""
    return reason if reason in KNOWN_REASONS else OTHER_REASON


TRANSITIONS = Counter(
    "botfleet_transitions_total",
    "Bot status transitions; `reason` is `other` for a reason outside the known set",
    ["to", "reason", "source"],
)
LAUNCH_SECONDS = Histogram(
    "botfleet_launch_seconds",
    "Time the orchestrator took to launch a workload",
    ["orchestrator"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
COMMANDS = Counter("botfleet_commands_total", "Commands issued to bots", ["action"])
COMMAND_PUBLISH_FAILURES = Counter(
    "botfleet_command_publish_failures_total", "Command publishes that Redis refused"
)
RECONCILER_REPAIRS = Counter(
    "botfleet_reconciler_repairs_total", "Fixes made by the reconciler", ["reason"]
)
RECONCILER_ERRORS = Counter(
    "botfleet_reconciler_errors_total", "Reconciler steps that raised", ["step"]
)
BOTS = Gauge(
    "botfleet_bots",
    "Bots by status and backend, as of the last reconciler tick",
    ["status", "backend"],
)
COMMAND_ROUND_TRIP = Histogram(
    "botfleet_command_round_trip_seconds",
    "From a command's creation to the bot's answer",
    ["action", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
LEADER = Gauge("botfleet_reconciler_leader", "1 while this replica runs the reconciler")
WEBHOOK_ATTEMPTS = Counter(
    "botfleet_webhook_attempts_total", "Webhook delivery attempts", ["outcome"]
)
WEBHOOK_GAVE_UP = Counter(
    "botfleet_webhook_deliveries_failed_total", "Webhook deliveries given up after 24 h"
)
LOOP_FAILURES = Counter(
    "botfleet_loop_failures_total", "Runs of a periodic loop that raised", ["loop"]
)
LOOP_CONSECUTIVE_FAILURES = Gauge(
    "botfleet_loop_consecutive_failures", "Failed runs of a loop since its last success", ["loop"]
)
LOOP_LAST_OK = Gauge(
    "botfleet_loop_last_ok_timestamp_seconds", "When a loop last ran without error", ["loop"]
)
QUEUED_BOTS = Gauge("botfleet_queued_bots", "Bots waiting in the queue (`queued`)")
QUEUE_WAIT_SECONDS = Histogram(
    "botfleet_queue_wait_seconds",
    "How long a bot waited in the queue, by how the wait ended (`admitted`, `queue_timeout`)",
    ["outcome"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)
TIMER_LATENESS_SECONDS = Histogram(
    "botfleet_timer_lateness_seconds",
    "How late a timer fired after its time (`start_at`, `max_duration`, `restart`, "
    "`queue_timeout`, `health_rule`)",
    ["timer"],
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 5, 10, 30),
)

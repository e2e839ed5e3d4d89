"""Webhook subscriptions' rules (services/webhook_filters.py): which outbox events an endpoint's
event types and label filter want, and which custom headers it may carry."""

from __future__ import annotations

from datetime import timedelta

import pytest

from botfleet.manager.core.errors import Invalid
from botfleet.manager.core.models import utcnow
from botfleet.manager.core.webhook_models import WebhookEndpoint
from botfleet.manager.services import webhook_breaker
from botfleet.manager.services.webhook_filters import (
    MAX_HEADERS,
    check_events,
    check_headers,
    check_label_filter,
    kinds_for,
    labels_match,
    sendable,
    wants,
)

ACTIVE = {"bot_id": "b", "from": "starting", "to": "active"}
FAILED = {"bot_id": "b", "from": "active", "to": "failed"}


def test_every_type_when_no_filter_but_a_command_only_once_it_ended() -> None:
    assert wants(None, "transition", ACTIVE) and wants(None, "report", {"report": {}})
    assert wants(None, "queued", {"position": 1}) and wants(None, "schedule", {})
    for status in ("acked", "failed", "expired"):
        assert wants(None, "command", {"status": status})
    for status in ("pending", "delivered"):
        assert not wants(None, "command", {"status": status}), "not a result yet"
    assert not wants(None, "exit", {}), "a kind that is no webhook"


def test_each_endpoint_gets_only_its_types() -> None:
    reports = ["bot.report", "command.result"]
    assert wants(reports, "report", {}) and wants(reports, "command", {"status": "acked"})
    assert not wants(reports, "transition", ACTIVE)
    assert not wants(["bot.transition"], "report", {})
    assert kinds_for(reports) == ["command", "report"]
    assert kinds_for(None) == ["command", "queued", "report", "schedule", "transition"]


def test_transitions_by_the_status_they_enter() -> None:
    failures = ["bot.transition.failed"]
    assert wants(failures, "transition", FAILED) and not wants(failures, "transition", ACTIVE)
    assert kinds_for(failures) == ["transition"]
    assert wants(["bot.transition", "bot.transition.failed"], "transition", ACTIVE)


def test_unknown_types_are_refused_with_a_stable_code() -> None:
    assert check_events(["bot.report", "bot.report", "schedule.fired"]) == [
        "bot.report",
        "schedule.fired",
    ]
    for wrong in ("bot.transitions", "bot.transition.sleeping", "webhook.test", "BOT.REPORT"):
        with pytest.raises(Invalid) as refused:
            check_events([wrong])
        assert refused.value.code == "unknown_event_type"


def test_a_label_filter_needs_every_pair() -> None:
    labels = {"team": "a", "env": "prod"}
    assert labels_match(None, labels) and labels_match({}, None)
    assert labels_match({"team": "a"}, labels) and labels_match(labels, labels)
    assert not labels_match({"team": "a", "env": "dev"}, labels)
    assert not labels_match({"team": "a"}, None), "a bot without labels (or gone)"
    with pytest.raises(Invalid) as refused:
        check_label_filter({"bad key!": "x"})
    assert refused.value.code == "invalid_label_filter"


def test_custom_headers_may_not_be_ours_and_are_bounded() -> None:
    fine = {"Authorization": "Bearer abc", "X-Team": "a b"}
    assert check_headers(fine) == fine
    refused_headers = [
        {"Content-Type": "text/plain"},
        {"content-length": "1"},
        {"Host": "example.com"},
        {"User-Agent": "me"},
        {"webhook-signature": "v1,forged"},
        {"X-Botfleet-Anything": "1"},
        {"Transfer-Encoding": "chunked"},
        {"Bad Name": "x"},
        {"X-A": "line\r\nInjected: 1"},
        {"X-A": " padded"},
        {"X-A": "x" * 1025},
        {"X-A": "1", "x-a": "2"},
        {f"X-{n}": "v" for n in range(MAX_HEADERS + 1)},
    ]
    for headers in refused_headers:
        with pytest.raises(Invalid) as refused:
            check_headers(headers)
        assert refused.value.code == "webhook_header_refused", headers
        assert "Injected" not in refused.value.message and "padded" not in refused.value.message
    assert sendable({"X-Ok": "1", "Content-Type": "stale"}) == {"X-Ok": "1"}


def test_the_breaker_state_shown() -> None:
    now = utcnow()
    endpoint = WebhookEndpoint(pause_s=0.0, paused_until=None)
    assert webhook_breaker.state(endpoint, now=now) == "closed"
    endpoint.pause_s, endpoint.paused_until = 60.0, now + timedelta(seconds=30)
    assert webhook_breaker.state(endpoint, now=now) == "open"
    endpoint.paused_until = now - timedelta(seconds=1)
    assert webhook_breaker.state(endpoint, now=now) == "half_open"

"""What the bot firewall guards (SECURITY.md, network), decided from the settings alone: the
database's port and the blocked ports, for which uids, and when no firewall is needed or
iptables is missing; no rule is installed here."""

from __future__ import annotations

from pathlib import Path

import pytest

from botfleet.manager.bot_firewall import FirewallError, FirewallNotNeeded, apply_bot_firewall, plan
from botfleet.manager.core.settings import Settings


def test_auto_starts_without_iptables_and_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    settings = _settings(orchestrator="docker")
    with caplog.at_level("WARNING", logger="botfleet.manager.bot_firewall"):
        assert apply_bot_firewall(settings) == []
    assert "bot firewall off: iptables is not installed" in caplog.text
    with pytest.raises(FirewallError, match="iptables is not installed"):
        apply_bot_firewall(settings.model_copy(update={"bot_firewall": "on"}))


def test_what_is_guarded_follows_the_database_url_and_the_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rules = plan(_settings(orchestrator="docker", bot_blocked_ports=[4646]))
    assert {(r.family, r.port, r.uids, r.destination) for r in rules} == {
        (4, 5432, "10001", None),
        (6, 5432, "10001", None),
        (4, 4646, "10001", None),
        (6, 4646, "10001", None),
    }
    private = _settings(
        orchestrator="docker", database_url="postgresql+psycopg://u:p@10.1.2.3:6432/db"
    )
    assert [(r.family, r.port, r.destination) for r in plan(private)] == [(4, 6432, "10.1.2.3")]
    monkeypatch.setenv("BOTFLEET_DOCKER_USER", "4242:4242")
    assert {r.uids for r in plan(_settings(orchestrator="docker"))} == {"4242"}
    for settings in (
        _settings(orchestrator="docker", database_url="sqlite:////tmp/x.db"),
        _settings(orchestrator="nomad"),
    ):
        with pytest.raises(FirewallNotNeeded):
            plan(settings)
    monkeypatch.setenv("BOTFLEET_DOCKER_NETWORK", "botfleet")
    with pytest.raises(FirewallNotNeeded, match="not the host's"):
        plan(_settings(orchestrator="docker"))


def _settings(**values: object) -> Settings:
    base: dict[str, object] = {
        "data_dir": Path("/tmp/botfleet-firewall-test"),
        "database_url": "postgresql+psycopg://botfleet:botfleet@127.0.0.1:5432/botfleet",
    }
    return Settings(**(base | values))  # type: ignore[arg-type]

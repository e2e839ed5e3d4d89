"""A loop that keeps failing, against a real manager: `/readyz` answers 503 with the loop's error,
then recovers."""

from __future__ import annotations

import httpx
from sqlalchemy import create_engine, text

from botfleet.manager.background.loops import FAILURES_TOLERATED
from tests.support import Manager, wait_until


def readyz(manager: Manager) -> httpx.Response:
    return httpx.get(f"{manager.url}/readyz", timeout=10)


def test_readyz_reports_a_failing_loop_with_its_error_and_recovers(manager: Manager) -> None:
    """The webhook sender's queries fail while the database itself answers: its table is
    renamed away (what a half-applied migration or a lost grant looks like). The sender's
    `send_due` step fails on every tick, so its loop fails as a whole; the reconciler's
    per-bot failures (an engine that cannot be asked) are tolerated by design, not loop
    failures, so they would not show this."""
    wait_until(
        lambda: readyz(manager).json()["loops"]["webhooks"]["state"] == "ok",
        timeout=30,
        what="the webhook loop to run",
    )
    engine = create_engine(manager.database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE webhook_deliveries RENAME TO wd_hidden"))
        try:
            # Housekeeping's retention reads that table too, and may turn failing first.
            failing = wait_until(
                lambda: (
                    (r := readyz(manager)).status_code == 503
                    and r.json()["loops"]["webhooks"]["state"] == "failing"
                    and r
                ),
                timeout=30,
                what="/readyz to report the failing loop",
            )
        finally:
            with engine.begin() as connection:
                connection.execute(text("ALTER TABLE wd_hidden RENAME TO webhook_deliveries"))
        body = failing.json()
        assert body["status"] == "unavailable"
        assert set(body["checks"].values()) == {"ok"}, "only the loop fails"
        webhooks = body["loops"]["webhooks"]
        assert webhooks["state"] == "failing"
        assert webhooks["consecutive_failures"] >= FAILURES_TOLERATED
        assert webhooks["last_error"].startswith("send_due: ")
        assert "webhook_deliveries" in webhooks["last_error"]
        assert body["loops"]["reconciler"]["state"] == "ok"
        assert "[SQL" not in failing.text and "botfleet:botfleet" not in failing.text
        metrics = httpx.get(f"{manager.url}/metrics").text
        assert 'botfleet_loop_failures_total{loop="webhooks"}' in metrics

        recovered = wait_until(
            lambda: (r := readyz(manager)).status_code == 200 and r,
            timeout=90,
            what="/readyz to recover",
        )
        webhooks = recovered.json()["loops"]["webhooks"]
        assert (webhooks["state"], webhooks["consecutive_failures"]) == ("ok", 0)
        assert "webhook_deliveries" in webhooks["last_error"], "the history stays"
    finally:
        engine.dispose()

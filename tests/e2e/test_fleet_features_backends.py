"""Issue 18's bot-facing features on every backend that runs here (process and Docker): a custom
command's result, a report, a secrets update the bot fetches itself, and a relaunch. The feature
tests (tests/integration/api/: test_custom_commands.py, test_reports.py, test_secrets_update.py,
test_relaunch.py) go deep on one backend; this one proves the same paths through each engine,
where the runtime reaches the manager from inside a container."""

from __future__ import annotations

import pytest

from tests.support import Manager, wait_for_command, wait_for_status, wait_until

DONE = {"acked", "failed", "expired"}
MANAGER_ENV = {"BOTFLEET_REPORT_MIN_INTERVAL_S": "0.5"}


@pytest.mark.timeout(240)
def test_commands_reports_secrets_and_relaunch_on_each_backend(
    any_backend_manager: Manager,
) -> None:
    manager = any_backend_manager
    _, client = manager.new_user()
    with client:
        config = {"report_every_s": 0.3}
        created = client.post("/bots", json={"bot": "demo", "config": config, "labels": {"t": "x"}})
        assert created.status_code == 201, created.text
        bot = wait_for_status(client, created.json()["id"], {"active"}, timeout=90)

        # A custom command answers with the bot's own result.
        sent = client.post(
            f"/bots/{bot['id']}/commands", json={"action": "echo", "payload": {"k": [1, "v"]}}
        )
        assert sent.status_code == 202, sent.text
        done = wait_for_command(client, bot["id"], sent.json()["id"], DONE)
        assert (done["status"], done["result"]) == ("acked", {"k": [1, "v"]}), done

        # The bot's reports reach its record.
        reported = wait_until(
            lambda: (b := client.get(f"/bots/{bot['id']}").json())["report"] and b,
            timeout=30,
            what="the demo bot's report",
        )
        assert reported["report"]["n"] >= 1 and reported["reported_at"]

        # New secrets: the command carries none; the runtime fetches them and hands them over.
        sent = client.put(f"/bots/{bot['id']}/secrets", json={"api_key": "s3cret-value-123"})
        assert sent.status_code == 202, sent.text
        done = wait_for_command(client, bot["id"], sent.json()["id"], DONE)
        assert done["status"] == "acked", done
        wait_until(
            lambda: (
                "received new secrets (1 names)"
                in client.get(f"/bots/{bot['id']}/logs", params={"tail": 200}).text
            ),
            timeout=15,
            what="the bot's on_secrets",
        )

        assert client.post(f"/bots/{bot['id']}/stop").status_code == 202
        wait_for_status(client, bot["id"], {"completed"}, timeout=90)

        # Relaunch: a new bot with the same kind, config and labels runs on the same backend.
        again = client.post(f"/bots/{bot['id']}/relaunch")
        assert again.status_code == 201, again.text
        relaunched = again.json()
        assert relaunched["id"] != bot["id"] and relaunched["relaunch_of"] == bot["id"]
        assert relaunched["labels"] == {"t": "x"}
        active = wait_for_status(client, relaunched["id"], {"active"}, timeout=90)
        assert active["orchestrator"] == bot["orchestrator"]
        assert client.get(f"/bots/{relaunched['id']}").json()["config"] == config
        assert client.post(f"/bots/{relaunched['id']}/stop").status_code == 202
        wait_for_status(client, relaunched["id"], {"completed"}, timeout=90)

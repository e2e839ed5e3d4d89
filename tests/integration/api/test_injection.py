"""What a bot (or anyone) sends never becomes structure elsewhere (issue 15, item 9): a callback
`reason` is not a Prometheus series of its own, a `detail` or a name is not Rich markup in the
CLI, and the unauthenticated `/readyz` says codes, not the errors' text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from botfleet.cli.main import app
from tests.support import (
    SPY_RUNTIME_ENV,
    Manager,
    RedisServer,
    running_manager,
    runtime_env,
    wait_for_status,
)

HOSTILE = "[/oops] [bold]x"


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("injection")
    with running_manager(root, redis_server.url, extra_env=SPY_RUNTIME_ENV) as instance:
        yield instance


def transitions_metric(manager: Manager) -> list[str]:
    text = httpx.get(f"{manager.url}/metrics").text
    return [line for line in text.splitlines() if line.startswith("botfleet_transitions_total{")]


def test_a_bots_own_reason_is_other_in_metrics_and_real_in_its_history(
    manager: Manager, tmp_path: Path
) -> None:
    user, client = manager.new_user()
    created = client.post("/bots", json={"bot": "demo", "name": "[/oops] name", "config": {}})
    bot = wait_for_status(client, created.json()["id"], {"active"})
    token = runtime_env(bot["runtime_ref"])["BOTFLEET_BOT_TOKEN"]
    said = httpx.post(
        f"{manager.callback_url}/internal/bots/{bot['id']}/callbacks",
        json={"event": "leaving", "reason": "zz_unknown_123", "detail": HOSTILE},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert said.status_code == 200, said.text

    last = client.get(f"/bots/{bot['id']}/transitions").json()["items"][-1]
    assert (last["to"], last["reason"], last["detail"]) == ("stopping", "zz_unknown_123", HOSTILE)
    series = transitions_metric(manager)
    assert not any("zz_unknown_123" in line for line in series), series
    assert any(
        'reason="other"' in line and 'to="stopping"' in line and 'source="runtime"' in line
        for line in series
    ), series
    assert any('reason="started"' in line for line in series), "known reasons keep their name"

    # The CLI prints the hostile detail and name as they are, and exits 0.
    runner = CliRunner()
    env = {
        "BOTFLEET_URL": manager.url,
        "BOTFLEET_KEY": user["api_key"],
        "BOTFLEET_CONFIG": str(tmp_path / "absent.toml"),
        "COLUMNS": "200",
    }
    for args in (["bots", "show", bot["id"]], ["bots", "ls"]):
        shown = runner.invoke(app, args, env=env, catch_exceptions=False)
        assert shown.exit_code == 0, shown.output
        assert "[/oops] name" in shown.stdout
    shown = runner.invoke(app, ["bots", "show", bot["id"]], env=env, catch_exceptions=False)
    assert HOSTILE in shown.stdout, shown.stdout
    client.post(f"/bots/{bot['id']}/stop")


def test_readyz_says_codes_not_host_names(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    try:
        with running_manager(tmp_path, redis_server.url) as manager:
            port = str(redis_server.port)
            redis_server.stop()
            ready = httpx.get(f"{manager.url}/readyz", timeout=15)
            assert ready.status_code == 503
            body = ready.json()
            assert body["checks"]["redis"] == "unreachable", body
            assert body["checks"]["database"] == "ok"
            checks = str(body["checks"])
            assert "127.0.0.1" not in checks and port not in checks, checks
            assert not re.search(r"Error|refused|connect", checks), checks
            assert "readiness: redis is unreachable" in manager.log_tail(200), "the text is logged"
    finally:
        redis_server.stop()

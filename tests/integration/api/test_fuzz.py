"""Property-based fuzzing of every endpoint with schemathesis, from the project's own OpenAPI
schema, authenticated: no answer is a 5xx and every answer matches the schema.

`make test` runs a bounded number of examples per operation; `make fuzz` runs many more
(BOTFLEET_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support import (
    ADMIN_TOKEN,
    SPY_RUNTIME_ENV,
    Manager,
    RedisServer,
    running_manager,
    runtime_env,
    wait_for_status,
)

EXAMPLES = int(os.environ.get("BOTFLEET_FUZZ_EXAMPLES", "15"))


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("fuzz")
    with running_manager(root, redis_server.url, extra_env=SPY_RUNTIME_ENV) as instance:
        yield instance


@pytest.fixture(scope="module")
def credentials(manager: Manager) -> dict[str, str]:
    """An API key with one running bot, that bot's own token, and the admin token."""
    _, client = manager.new_user(max_bots=3)
    bot = client.post("/bots", json={"bot": "demo", "config": {}}).json()
    ref = wait_for_status(client, bot["id"], {"active"})["runtime_ref"]
    env = runtime_env(ref)  # the token comes through the bot's secret pipe
    return {
        "user": str(client.headers["Authorization"]),
        "bot": f"Bearer {env['BOTFLEET_BOT_TOKEN']}",
        "admin": f"Bearer {ADMIN_TOKEN}",
        "callback_url": manager.callback_url,
    }


@pytest.fixture(scope="module")
def api_schema(manager: Manager) -> Any:
    return schemathesis.openapi.from_url(f"{manager.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_endpoint(case: Any, credentials: dict[str, str]) -> None:
    path: str = case.path
    role = (
        "admin" if path.startswith("/admin") else "bot" if path.startswith("/internal") else "user"
    )
    # An event stream (`/events`, a followed log) never ends: schemathesis checks what arrived
    # until it goes quiet for the read timeout, 10 s by default, per example. The stream's first
    # event comes at once, so 2 s of quiet is as good a cut and keeps the run short.
    streaming = path == "/events" or path.endswith("/logs")
    # Valid-looking data may still be refused on its meaning (an unknown bot name, an illegal
    # state): so no "positive data must be accepted" check; every other check applies.
    case.call_and_validate(
        base_url=credentials["callback_url"] if role == "bot" else None,  # bots' own port
        headers={"Authorization": credentials[role]},
        excluded_checks=[positive_data_acceptance],
        **({"timeout": (10, 2)} if streaming else {}),
    )

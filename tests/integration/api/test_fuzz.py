"""Property-based fuzzing of every endpoint with schemathesis, from the project's own OpenAPI
documents, authenticated: no answer is a 5xx and every answer matches the schema. The users' API
comes from `/openapi.json` on the API port, the bots' callbacks from `/internal/openapi.json` on
the callback port (each port serves only its own routes). Both declare bearer schemes, so
schemathesis also checks that each operation refuses a call without the token, or with a wrong one.

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
from schemathesis.core.parameters import ParameterLocation
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

EXAMPLES = int(os.environ.get("BOTFLEET_FUZZ_EXAMPLES", "10"))


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("fuzz")
    # The auth checks send a wrong token to every operation: 401s this test wants, not the
    # 429 the failed-authentication limit answers past its burst.
    env = {**SPY_RUNTIME_ENV, "BOTFLEET_AUTH_FAILURE_RATE_PER_S": "0"}
    with running_manager(root, redis_server.url, extra_env=env) as instance:
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


@pytest.fixture(scope="module")
def callbacks_schema(manager: Manager) -> Any:
    return schemathesis.openapi.from_url(f"{manager.callback_url}/internal/openapi.json")


api = schemathesis.pytest.from_fixture("api_schema")
callbacks = schemathesis.pytest.from_fixture("callbacks_schema")
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck)
)


@api.parametrize()
@FUZZ_SETTINGS
def test_every_endpoint(case: Any, credentials: dict[str, str]) -> None:
    assert not case.path.startswith("/internal/"), "callbacks belong to the callback port"
    call_and_validate(case, credentials, "admin" if case.path.startswith("/admin") else "user")


@callbacks.parametrize()
@FUZZ_SETTINGS
def test_every_callback(case: Any, credentials: dict[str, str]) -> None:
    assert case.path.startswith("/internal/"), case.path
    call_and_validate(case, credentials, "bot")


def call_and_validate(case: Any, credentials: dict[str, str], role: str) -> None:
    path: str = case.path
    # An event stream (`/events`, a followed log) never ends: schemathesis checks what arrived
    # until it goes quiet for the read timeout, 10 s by default, per example. The stream's first
    # event comes at once, so 1 s of quiet is as good a cut and keeps the run short.
    streaming = path == "/events" or path.endswith("/logs")
    # Valid-looking data may still be refused on its meaning (an unknown bot name, an illegal
    # state): so no "positive data must be accepted" check; every other check applies.
    # A case whose headers were made invalid on purpose (the bearer scheme's Authorization left
    # out or malformed) is sent as made: our token over it would make the refusal it expects
    # an acceptance (ST201 on GET /admin/users).
    header = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
    negative_header = header is not None and header.mode.is_negative
    case.call_and_validate(
        base_url=credentials["callback_url"] if role == "bot" else None,  # bots' own port
        headers={} if negative_header else {"Authorization": credentials[role]},
        excluded_checks=[positive_data_acceptance],
        **({"timeout": (10, 1)} if streaming else {}),
    )
